#!/usr/bin/env python3
"""Sends the same bad or unknown-id CRI calls to two runtimes and prints the
gRPC code each answers, marking with !! where they differ (issue 8's sweep
of error paths against containerd):

    scripts/cri-error-sweep.py unix:///run/berth/berth.sock unix:///run/containerd/containerd.sock

Needs Python's grpcio and grpcio-tools (PyPI; a venv will do, not needed by
CI); the CRI stubs are generated from crates/cri/proto at each run.
"""
import os
import subprocess
import sys
import tempfile

PROTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "cri", "proto", "runtime", "v1")
_out = tempfile.mkdtemp(prefix="cri-sweep-")
subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", PROTO, "--python_out", _out,
                "--grpc_python_out", _out, os.path.join(PROTO, "api.proto")], check=True)
sys.path.insert(0, _out)
import grpc  # noqa: E402
import api_pb2 as pb  # noqa: E402
import api_pb2_grpc as g  # noqa: E402


def run(ep):
    ch = grpc.insecure_channel(ep, options=[("grpc.default_authority", "localhost")])
    rt = g.RuntimeServiceStub(ch); im = g.ImageServiceStub(ch)
    U = "0123456789abcdef" * 4
    calls = [
        ("PodSandboxStatus", lambda: rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=U))),
        ("StopPodSandbox", lambda: rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=U))),
        ("RemovePodSandbox", lambda: rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=U))),
        ("PodSandboxStatus-empty", lambda: rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=""))),
        ("CreateContainer-unknown-pod", lambda: rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=U, config=pb.ContainerConfig(metadata=pb.ContainerMetadata(name="x"), image=pb.ImageSpec(image="busybox")), sandbox_config=pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p", uid="u", namespace="n"))))),
        ("CreateContainer-no-config", lambda: rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=U))),
        ("StartContainer", lambda: rt.StartContainer(pb.StartContainerRequest(container_id=U))),
        ("StopContainer", lambda: rt.StopContainer(pb.StopContainerRequest(container_id=U, timeout=1))),
        ("RemoveContainer", lambda: rt.RemoveContainer(pb.RemoveContainerRequest(container_id=U))),
        ("ContainerStatus", lambda: rt.ContainerStatus(pb.ContainerStatusRequest(container_id=U))),
        ("UpdateContainerResources", lambda: rt.UpdateContainerResources(pb.UpdateContainerResourcesRequest(container_id=U, linux=pb.LinuxContainerResources(memory_limit_in_bytes=100000000)))),
        ("ReopenContainerLog", lambda: rt.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=U))),
        ("ExecSync", lambda: rt.ExecSync(pb.ExecSyncRequest(container_id=U, cmd=["true"], timeout=5))),
        ("Exec", lambda: rt.Exec(pb.ExecRequest(container_id=U, cmd=["true"], stdout=True))),
        ("Attach", lambda: rt.Attach(pb.AttachRequest(container_id=U, stdout=True))),
        ("PortForward", lambda: rt.PortForward(pb.PortForwardRequest(pod_sandbox_id=U, port=[80]))),
        ("ContainerStats", lambda: rt.ContainerStats(pb.ContainerStatsRequest(container_id=U))),
        ("PodSandboxStats", lambda: rt.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=U))),
        ("UpdatePodSandboxResources", lambda: rt.UpdatePodSandboxResources(pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id=U))),
        ("CheckpointContainer", lambda: rt.CheckpointContainer(pb.CheckpointContainerRequest(container_id=U, location="/tmp/x.tar"))),
        ("UpdateRuntimeConfig-bad", lambda: rt.UpdateRuntimeConfig(pb.UpdateRuntimeConfigRequest(runtime_config=pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr="nonsense"))))),
        ("ImageStatus", lambda: im.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image="sha256:"+U)))),
        ("ImageStatus-empty", lambda: im.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image="")))),
        ("RemoveImage", lambda: im.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image="sha256:"+U)))),
        ("PullImage-bad-ref", lambda: im.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image="UPPER/Case:tag")))),
        ("PullImage-missing", lambda: im.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image="docker.io/library/doesnotexist:1")))),
        ("RunPodSandbox-no-config", lambda: rt.RunPodSandbox(pb.RunPodSandboxRequest())),
        ("RunPodSandbox-bad-handler", lambda: rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p", uid="u", namespace="n")), runtime_handler="nope"))),
    ]
    out = {}
    for name, f in calls:
        try:
            f(); out[name] = ("OK", "")
        except grpc.RpcError as e:
            out[name] = (e.code().name, e.details()[:90])
    return out


def main():
    a = run(sys.argv[1])
    b = run(sys.argv[2])
    for k in a:
        mark = "  " if a[k][0] == b[k][0] else "!!"
        print(f"{mark} {k:30} first={a[k][0]:20} second={b[k][0]:20} | {a[k][1]} | {b[k][1]}")


if __name__ == "__main__":
    main()
