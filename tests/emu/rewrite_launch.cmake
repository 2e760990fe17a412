# Turns a .cu file into C++ for the CPU emulation: every launch
# `kernel<<<grid, block, shmem, stream>>>(args)` becomes
# `emu::launch("kernel", kernel, grid, block, shmem, stream)(args)`.
# No newline is added, so the #line directive keeps compiler messages
# pointing at the original .cu lines. Usage:
#   cmake -DIN=file.cu -DOUT=file.cpp -P rewrite_launch.cmake
file(READ "${IN}" src)
string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_]*)[ \t]*<<<" "emu::launch(\"\\1\", \\1, " src "${src}")
string(REPLACE ">>>" ")" src "${src}")
file(WRITE "${OUT}.tmp" "#line 1 \"${IN}\"\n${src}")
file(RENAME "${OUT}.tmp" "${OUT}")
