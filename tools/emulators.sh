#!/usr/bin/env bash
# Starts the official Firestore and Pub/Sub emulators (installed on every machine of this
# project, see ../shared/reference/EMULATORS.md) on free ports and exports
# FIRESTORE_EMULATOR_HOST / PUBSUB_EMULATOR_HOST. Source it:  source tools/emulators.sh
# `emulators_stop` (also run on EXIT by tools/test.sh) stops them.
SDK=${CLOUDSDK_ROOT:-/usr/lib/google-cloud-sdk}
FS_JAR="$SDK/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
PS_JAR=$(ls "$SDK"/platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar 2>/dev/null | head -1 || true)
EMU_LOG_DIR=${EMU_LOG_DIR:-$(mktemp -d)}
mkdir -p "$EMU_LOG_DIR"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

emulators_wait() { # url name pid
  for _ in $(seq 1 900); do
    curl -sf -o /dev/null "$1" && return 0
    kill -0 "$3" 2>/dev/null || { echo "$2 emulator exited:" >&2; cat "$EMU_LOG_DIR/$2.log" >&2; return 1; }
    sleep 0.1
  done
  echo "$2 emulator not ready after 90 s" >&2; cat "$EMU_LOG_DIR/$2.log" >&2; return 1
}

emulators_start() {
  command -v java >/dev/null || { echo "java is missing: the emulators need a JRE (openjdk-17-jre-headless)" >&2; return 1; }
  [ -f "$FS_JAR" ] || { echo "Firestore emulator jar missing: $FS_JAR (package google-cloud-cli-firestore-emulator)" >&2; return 1; }
  [ -n "$PS_JAR" ] || { echo "Pub/Sub emulator jar missing under $SDK/platform/pubsub-emulator (package google-cloud-cli-pubsub-emulator)" >&2; return 1; }
  FS_PORT=$(free_port); PS_PORT=$(free_port)
  java -Duser.language=en -cp "$FS_JAR" com.google.cloud.datastore.emulator.firestore.CloudFirestore \
    start --host=127.0.0.1 --port="$FS_PORT" >"$EMU_LOG_DIR/firestore.log" 2>&1 &
  FS_PID=$!
  java -jar "$PS_JAR" --host=127.0.0.1 --port="$PS_PORT" >"$EMU_LOG_DIR/pubsub.log" 2>&1 &
  PS_PID=$!
  local t0; t0=$(date +%s%N)
  emulators_wait "http://127.0.0.1:$FS_PORT/" firestore "$FS_PID" || return 1
  emulators_wait "http://127.0.0.1:$PS_PORT/v1/projects/tai-test/topics" pubsub "$PS_PID" || return 1
  echo "emulators ready in $(( ($(date +%s%N) - t0) / 1000000 )) ms (firestore :$FS_PORT, pubsub :$PS_PORT; logs in $EMU_LOG_DIR)"
  export FIRESTORE_EMULATOR_HOST=127.0.0.1:$FS_PORT
  export PUBSUB_EMULATOR_HOST=127.0.0.1:$PS_PORT
  export TAI_TEST_FIRESTORE_PID=$FS_PID TAI_TEST_PUBSUB_PID=$PS_PID
  # Tests that stop and restart an emulator of their own start it from this jar.
  export TAI_TEST_PUBSUB_JAR=$PS_JAR TAI_TEST_FIRESTORE_JAR=$FS_JAR
}

emulators_stop() {
  [ -n "${FS_PID:-}" ] && kill "$FS_PID" 2>/dev/null
  [ -n "${PS_PID:-}" ] && kill "$PS_PID" 2>/dev/null
  wait 2>/dev/null || true
}
