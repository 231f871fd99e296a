#!/usr/bin/env bash
# Builds llama.cpp's own server (llama-server) from the llama.cpp sources inside the llama-cpp-python
# sdist that Missive pins, with the same CPU flags as Missive's engine, so the two compare fairly.
# Idempotent: prints the binary's path. Takes a few minutes on 2 cores the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.3.36
OUT=.cache/bench
BIN="$OUT/llama-server"
PY=${PYTHON:-.venv/bin/python}
say() { printf '[build_llama_server] %s\n' "$*" >&2; }

if [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
fi
mkdir -p "$OUT/src"
if ! ls "$OUT"/src/llama_cpp_python-"$VERSION".tar.gz >/dev/null 2>&1; then
    say "downloading the llama-cpp-python $VERSION sdist"
    "$PY" -m pip download -q --no-deps --no-binary :all: -d "$OUT/src" "llama-cpp-python==$VERSION"
fi
tar -xzf "$OUT/src/llama_cpp_python-$VERSION.tar.gz" -C "$OUT/src"
SRC="$OUT/src/llama_cpp_python-$VERSION/vendor/llama.cpp"
cmake_args=$("$PY" scripts/llama_cmake_args.py)
say "building llama-server from $SRC with: $cmake_args (a few minutes)"
# shellcheck disable=SC2086
cmake -S "$SRC" -B "$OUT/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF \
    $cmake_args > "$OUT/cmake.log" 2>&1 || { tail -20 "$OUT/cmake.log"; exit 1; }
cmake --build "$OUT/build" --target llama-server -j "$(nproc)" > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
cp "$(find "$OUT/build" -name llama-server -type f -perm -u+x | head -1)" "$BIN"
say "built $BIN"
echo "$BIN"
