//! Incremental detokenization with stop strings: token bytes go in, text that is safe
//! to show comes out.
//!
//! Invariants: released text is valid UTF-8 and never contains a stop string or any
//! part of one (a stop string split across tokens is still caught); bytes of an
//! incomplete character are held until it completes; after a stop, nothing more is
//! released.

/// Result of feeding one token's bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Text now safe to send.
    pub text: String,
    /// A stop string matched; the sequence ends here.
    pub stopped: bool,
}

/// Per-sequence detokenizer.
#[derive(Debug, Default)]
pub struct TextStream {
    partial: Vec<u8>,
    held: String,
    stops: Vec<String>,
    stopped: bool,
}

impl TextStream {
    /// A stream that ends at the first of `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..Self::default()
        }
    }

    /// Feeds one token's bytes.
    pub fn push(&mut self, bytes: &[u8]) -> Pushed {
        if self.stopped {
            return Pushed {
                text: String::new(),
                stopped: true,
            };
        }
        self.partial.extend_from_slice(bytes);
        self.drain_utf8();
        if let Some(at) = self.first_stop() {
            self.stopped = true;
            self.held.truncate(at);
            return Pushed {
                text: std::mem::take(&mut self.held),
                stopped: true,
            };
        }
        let keep = self.stop_prefix_len();
        let split = self.held.len() - keep;
        let rest = self.held.split_off(split);
        Pushed {
            text: std::mem::replace(&mut self.held, rest),
            stopped: false,
        }
    }

    /// Releases whatever is held at the end of generation (incomplete bytes lossily).
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let tail = String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned();
        self.held.push_str(&tail);
        std::mem::take(&mut self.held)
    }

    /// Moves the longest valid UTF-8 prefix of `partial` into `held`; invalid
    /// sequences (not merely incomplete ones) become U+FFFD.
    fn drain_utf8(&mut self) {
        loop {
            match std::str::from_utf8(&self.partial) {
                Ok(s) => {
                    self.held.push_str(s);
                    self.partial.clear();
                    return;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    self.held
                        .push_str(std::str::from_utf8(&self.partial[..valid]).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            self.held.push('\u{FFFD}');
                            self.partial.drain(..valid + bad);
                        }
                        None => {
                            self.partial.drain(..valid);
                            return;
                        }
                    }
                }
            }
        }
    }

    fn first_stop(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
    }

    /// Length of the longest suffix of `held` that begins some stop string.
    fn stop_prefix_len(&self) -> usize {
        let mut best = 0;
        for s in &self.stops {
            for (i, _) in self.held.char_indices() {
                let suffix = &self.held[i..];
                if suffix.len() > best && s.starts_with(suffix) {
                    best = suffix.len();
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&[u8]]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut ts = TextStream::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let r = ts.push(p);
            out.push_str(&r.text);
            if r.stopped {
                return (out, true);
            }
        }
        out.push_str(&ts.finish());
        (out, false)
    }

    #[test]
    fn stop_split_across_tokens_is_caught_and_not_returned() {
        assert_eq!(
            run(&["END"], &[b"abc E", b"N", b"D more"]),
            ("abc ".into(), true)
        );
    }

    #[test]
    fn held_prefix_is_released_when_it_turns_out_not_to_be_a_stop() {
        assert_eq!(run(&["END"], &[b"x E", b"NX"]), ("x ENX".into(), false));
        let mut ts = TextStream::new(&["END".into()]);
        assert_eq!(ts.push(b"x E").text, "x ");
        assert_eq!(ts.push(b"NX").text, "ENX");
    }

    #[test]
    fn multibyte_characters_wait_for_all_their_bytes() {
        let euro = "€".as_bytes();
        let mut ts = TextStream::new(&[]);
        assert_eq!(ts.push(&euro[..1]).text, "");
        assert_eq!(ts.push(&euro[1..]).text, "€");
        assert_eq!(run(&[], &[&[0xff], b"a"]), ("\u{FFFD}a".into(), false));
        assert_eq!(run(&[], &[&euro[..2]]), ("\u{FFFD}".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(run(&["b", "cd"], &[b"acdb"]), ("a".into(), true));
    }
}
