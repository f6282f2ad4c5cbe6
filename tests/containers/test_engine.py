"""The Docker SDK speaks to the test engine: what the container activator relies on."""

from __future__ import annotations

import io

import docker

from container_engine import Engine


def test_sdk_lists_creates_starts_inspects_commits_and_builds(engine: Engine) -> None:
    base_id = engine.import_image("localhost/bsi-test/sdk:1", {"usr/lib/libssl.so.3": b"old\n"})
    client = engine.client()
    assert base_id in {image.id for image in client.images.list()}

    container = client.containers.create(
        "localhost/bsi-test/sdk:1",
        name="sdk-check",
        environment={"GREETING": "hello"},
        labels={"app": "sdk"},
    )
    try:
        container.start()
        container.reload()
        assert container.status == "running"
        assert container.image.id == base_id
        assert "GREETING=hello" in container.attrs["Config"]["Env"]
        assert container.labels["app"] == "sdk"
        exit_code, output = container.exec_run(["cat", "/usr/lib/libssl.so.3"])
        assert (exit_code, output) == (0, b"old\n")

        committed = container.commit(repository="localhost/bsi-test/sdk", tag="committed")
        assert committed.id != base_id

        dockerfile = f"FROM {base_id}\nLABEL bsi.test=built\n".encode()
        built, _ = client.images.build(fileobj=io.BytesIO(dockerfile), rm=True)
        assert built.labels["bsi.test"] == "built"
    finally:
        container.remove(force=True)
    assert "sdk-check" not in {c.name for c in client.containers.list(all=True)}


def test_an_engine_that_does_not_answer_is_a_docker_exception(tmp_path: object) -> None:
    try:
        docker.DockerClient(base_url=f"unix://{tmp_path}/absent.sock", timeout=2).ping()
    except docker.errors.DockerException:
        return
    raise AssertionError("pinging a socket nobody listens on succeeded")
