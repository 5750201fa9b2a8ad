"""IR kernel groups -> backend source (Triton, TVM). Arrives with issues 4 and 5."""
