#!/usr/bin/env python3
"""Turns a recording of a kubelet's CRI calls (Berth's `record_requests`,
e.g. `BERTH_RECORD=/tmp/calls.jsonl scripts/kubelet-e2e.sh`) into a test
fixture that crates/berth/tests/kubelet_replay.rs replays:

    scripts/kubelet-fixture.py RECORDING > crates/berth/tests/fixtures/kubelet/NAME.jsonl

Record from a fresh runtime (`rm -rf /var/tmp/berth-kubelet-e2e/berth` first):
with the images already there the kubelet pulls nothing, and the replay
cannot map the image ids it uses.

Every call that changes state is kept, in the order the daemon answered
them. Reads the kubelet repeats every second (its relists, status and
stats polls, probes) are kept the first few times for each distinct
request. Host paths of the lab (`/var/tmp/berth-kubelet-e2e/...`) become
`$E2E/...`, replaced by a temporary directory at replay; responses keep only
the ids that later requests refer to. Each restart of the recorded daemon
(a start after the first) becomes a `{"restartDaemon": true}` line: the
replay kills its daemon with SIGKILL there and starts it again.
"""
import json
import sys

E2E = "/var/tmp/berth-kubelet-e2e"
CHANGES = {
    "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "CreateContainer",
    "StartContainer", "StopContainer", "RemoveContainer", "UpdateContainerResources",
    "ReopenContainerLog", "UpdateRuntimeConfig", "PullImage", "RemoveImage",
    "UpdatePodSandboxResources",
}
REPEATS = 2


def placeholders(value):
    if isinstance(value, str):
        return value.replace(E2E, "$E2E")
    if isinstance(value, list):
        return [placeholders(v) for v in value]
    if isinstance(value, dict):
        return {placeholders(k): placeholders(v) for k, v in value.items()}
    return value


def main(path):
    seen = {}
    starts = 0
    for line in open(path):
        try:
            call = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a daemon killed while writing it
        if "daemonStarted" in call:
            starts += 1
            if starts > 1:
                print(json.dumps({"restartDaemon": True}))
            continue
        method = call["method"]
        request = call.get("request", {})
        if method not in CHANGES:
            key = (method, json.dumps(request, sort_keys=True))
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > REPEATS:
                continue
        out = {"method": method, "code": call["code"], "request": request}
        response = call.get("response") or {}
        ids = {k: response[k] for k in ("podSandboxId", "containerId", "imageRef") if k in response}
        if ids:
            out["response"] = ids
        if "hostPaths" in call:
            out["hostPaths"] = call["hostPaths"]
        print(json.dumps(placeholders(out), sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1])
