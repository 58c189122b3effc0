"""The peers the benchmarks measure the pipeline's services against, one module each: how to
fetch, configure, start and stop them. What is measured stays in the benchmark scripts."""
