"""persistd_fuzzer: one libFuzzer target and its replay test."""

def persistd_fuzzer(name, target, srcs, deps, linkopts = [], size = "small"):
    """Declares <target>_fuzzer, its library and <target>_fuzzer_replay_test.

    The binary is a libFuzzer fuzzer under --config=fuzz (ASan, UBSan,
    clang) and, in the default build, a replayer of the files it is given
    (replay_main.cc). The replay test runs the target's built-in seeds and
    every file in regressions/<target>/ (inputs of fixed findings) in
    whichever build `bazel test` uses.

    Args:
      name: "<target>_fuzzer".
      target: the seed set of fuzz_seeds.h, and the regressions/ directory.
      srcs: the file defining LLVMFuzzerTestOneInput.
      deps: what it needs.
      linkopts: for every binary that links it.
      size: of the replay test.
    """
    native.cc_library(
        name = name + "_lib",
        srcs = srcs,
        linkopts = linkopts,
        deps = deps,
        # Only libFuzzer's main refers to LLVMFuzzerTestOneInput.
        alwayslink = True,
    )
    native.cc_binary(
        name = name,
        linkopts = select({
            "//server/fuzz:fuzzing": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
        deps = [":" + name + "_lib"] + select({
            "//server/fuzz:fuzzing": [],
            "//conditions:default": ["//server/fuzz:replay_main"],
        }),
    )
    native.cc_test(
        name = name + "_replay_test",
        size = size,
        args = [
            "--seeds=" + target,
            "--regressions=server/fuzz/regressions/" + target,
        ],
        data = native.glob(["regressions/" + target + "/*"]),
        deps = [
            ":" + name + "_lib",
            "//server/fuzz:replay_main",
        ],
    )
