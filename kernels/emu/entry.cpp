// The emulated library's one entry point (see cuda_emu.hpp): runs kernel `name` on a
// grid[3] x block[3] launch with the argument array `args` (a pointer to each
// argument's value, as cuLaunchKernel takes them). Returns 0, -1 for an unknown
// kernel, -2 for a block shape the emulator cannot run.
extern "C" int ferrite_emu_launch(const char* name, const unsigned* grid, const unsigned* block,
                                  void** args) {
    auto it = ferrite_emu::registry().find(name);
    if (it == ferrite_emu::registry().end()) return -1;
    const ferrite_emu::Launcher& f = it->second;
    return ferrite_emu::launch(dim3{grid[0], grid[1], grid[2]}, dim3{block[0], block[1], block[2]},
                               [&] { f(args); });
}
