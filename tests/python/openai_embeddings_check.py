"""The official OpenAI Python SDK's embeddings client against a running ferrite.

Usage: openai_embeddings_check.py BASE_URL ENCODER_MODEL
The SDK asks for base64 by default and decodes it itself; we also ask for floats and
check both agree, that vectors are unit length, that similar sentences score higher,
and that errors come back as the SDK's typed exceptions.
"""

import math
import sys

import openai

base, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)

texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell."]
default = client.embeddings.create(model=model, input=texts)
floats = client.embeddings.create(model=model, input=texts, encoding_format="float")
assert len(default.data) == 3, default
assert default.usage.prompt_tokens > 0 and default.usage.total_tokens == default.usage.prompt_tokens
for a, b in zip(default.data, floats.data):
    assert len(a.embedding) == 384, len(a.embedding)
    assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding)) < 1e-6
    norm = math.sqrt(sum(x * x for x in a.embedding))
    assert abs(norm - 1.0) < 1e-4, norm


def cos(i, j):
    return sum(x * y for x, y in zip(default.data[i].embedding, default.data[j].embedding))


assert cos(0, 1) > cos(0, 2) + 0.2, (cos(0, 1), cos(0, 2))
single = client.embeddings.create(model=model, input="A man is eating food.")
assert max(abs(x - y) for x, y in zip(single.data[0].embedding, default.data[0].embedding)) < 1e-5
same_dims = client.embeddings.create(model=model, input="hi", dimensions=384)
assert len(same_dims.data[0].embedding) == 384

try:
    client.embeddings.create(model=model, input="hi", dimensions=16)
    raise SystemExit("dimensions=16 should be refused")
except openai.BadRequestError as e:
    assert "dimensions" in str(e), e
try:
    client.embeddings.create(model="not-served", input="hi")
    raise SystemExit("an unknown model should be refused")
except openai.NotFoundError:
    pass
print("all OpenAI SDK embeddings checks passed")
