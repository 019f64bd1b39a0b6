#!/bin/sh
# A tiny "app" build: packs the sources with a build stamp into an artifact named for the
# platform. Free Agent runs it in the unpacked source with FREEAGENT_* set.
set -eu
echo "building ${FREEAGENT_BUILD_ID:-local} for ${FREEAGENT_PLATFORM:-android}"
case "${FREEAGENT_PLATFORM:-android}" in
  ios) ext=ipa ;;
  *) ext=apk ;;
esac
out="${FREEAGENT_OUTPUT_DIR:-./out}"
mkdir -p build "$out"
cp -R src/. build/
printf 'build %s\nplatform %s\n' "${FREEAGENT_BUILD_ID:-local}" "${FREEAGENT_PLATFORM:-android}" > build/BUILD_INFO
for f in build/*; do
  echo "packing $(basename "$f") ($(wc -c < "$f") bytes)"
done
tar -czf "$out/hello.$ext" -C build .
echo "artifact: hello.$ext ($(wc -c < "$out/hello.$ext") bytes)"
