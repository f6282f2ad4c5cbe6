"""A container image's files as a base tree, for ``bsi supplement build --image``.

The image comes from one of two places:

- an archive file: ``docker save`` / ``podman save`` (``manifest.json``
  naming the config and the layers in order) or an OCI image layout archive
  (``podman save --format oci-archive``: ``index.json`` -> manifest ->
  layers). The layers are applied in order with their whiteouts (a
  ``.wh.<name>`` entry deletes ``<name>``; ``.wh..wh..opq`` empties its
  directory), as the OCI image spec's "Applying Changesets" says;
- an image reference in a container engine (Docker Engine API through the
  Docker SDK): a container is created from it, never started, its file
  system exported (already flattened), and the container removed.

Either way the tree holds regular files, directories and symbolic links
(device nodes and FIFOs are skipped: a supplement does not patch them), and
the image ID (``sha256:`` of its config) comes back with it, so that the
build can check it against the spec's image prerequisite. Members that would
land outside the tree (``..``, absolute links followed) are refused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any

from bsi.cryptex.errors import InvalidSupplement
from bsi.errors import InvalidInput, NotFound
from bsi.strict import read_json

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


def image_tree(source: str, into: Path, *, engine: str) -> str:
    """Write the files of image ``source`` (an archive path or a reference) under ``into``.

    Returns the image ID. Raises :class:`NotFound` for an image the engine
    does not have or an archive that is not there, :class:`InvalidInput` for
    an archive that is not an image, and :class:`InvalidInput` naming the
    engine when it does not answer.
    """
    into.mkdir(parents=True, exist_ok=True)
    path = Path(source)
    if path.is_file():
        return _from_archive(path, into)
    return _from_engine(source, into, engine)


def _from_engine(reference: str, into: Path, engine: str) -> str:
    import docker
    import docker.errors

    try:
        client = docker.DockerClient(base_url=engine, timeout=300)
        client.ping()
    except docker.errors.DockerException as error:
        raise InvalidInput(
            f"the container engine at {engine} does not answer ({str(error)[:200]})",
            hint="start Docker or 'podman system service', or give --container-engine, or "
            "give the image as a 'docker save' archive",
        ) from None
    try:
        try:
            image = client.images.get(reference)
        except docker.errors.ImageNotFound:
            raise NotFound(
                f"image {reference!r} is not in the container engine at {engine} "
                "(and no such archive file exists)",
                hint="pull or load it first, or give a 'docker save' archive",
            ) from None
        container = client.containers.create(str(image.id), command=["/bin/true"])
        try:
            with tempfile.TemporaryFile() as exported:
                for chunk in container.export():
                    # The SDK streams bytes; its stubs say str.
                    exported.write(chunk)  # type: ignore[arg-type]
                exported.seek(0)
                with tarfile.open(fileobj=exported, mode="r:") as layer:
                    _apply(layer, into, f"image {reference}")
        finally:
            container.remove(force=True)
        return str(image.id)
    finally:
        client.close()


def _from_archive(path: Path, into: Path) -> str:
    try:
        archive = tarfile.open(path, mode="r:*")  # noqa: SIM115 -- closed by the with below
    except (tarfile.TarError, OSError) as error:
        raise InvalidInput(f"{path}: not an image archive ({error})") from None
    with archive:
        names = set(archive.getnames())
        try:
            if "manifest.json" in names:
                document: Any = _json(archive, "manifest.json", path)
                if len(document) != 1:
                    raise InvalidInput(f"{path}: manifest.json names {len(document)} images")
                config_name = str(document[0]["Config"])
                layers = [str(layer) for layer in document[0]["Layers"]]
            elif "index.json" in names:
                index: Any = _json(archive, "index.json", path)
                manifest: Any = _json(archive, _blob(index["manifests"][0]["digest"]), path)
                config_name = _blob(manifest["config"]["digest"])
                layers = [_blob(layer["digest"]) for layer in manifest["layers"]]
            else:
                config_name, layers = "", []
        except (KeyError, IndexError, TypeError):
            raise InvalidInput(
                f"{path}: its manifest does not name a config and layers",
                hint="make it with 'docker save IMAGE -o FILE' or 'podman save'",
            ) from None
        if not config_name:
            raise InvalidInput(
                f"{path}: neither a 'docker save' archive (manifest.json) nor an OCI image "
                "layout (index.json)",
                hint="make it with 'docker save IMAGE -o FILE' or 'podman save'",
            )
        config = _member_bytes(archive, config_name, path)
        for name in layers:
            with _member(archive, name, path) as data, tarfile.open(fileobj=data) as layer:
                _apply(layer, into, f"{path}:{name}")
    return "sha256:" + hashlib.sha256(config).hexdigest()


def _blob(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return f"blobs/{algorithm}/{hexdigest}"


def _json(archive: tarfile.TarFile, name: str, path: Path) -> object:
    return read_json(_member_bytes(archive, name, path), source=f"{path}:{name}")


def _member_bytes(archive: tarfile.TarFile, name: str, path: Path) -> bytes:
    with _member(archive, name, path) as data:
        return data.read()


@contextmanager
def _member(archive: tarfile.TarFile, name: str, path: Path) -> Iterator[IO[bytes]]:
    try:
        data = archive.extractfile(name)
    except KeyError:
        data = None
    if data is None:
        raise InvalidInput(f"{path}: the archive names {name!r} but does not hold it")
    with data:
        yield data


def _apply(layer: tarfile.TarFile, into: Path, where: str) -> None:
    """Apply one layer (or a flattened export) to ``into``, whiteouts included."""
    for member in layer:
        relative = PurePosixPath(member.name.lstrip("./") or ".")
        if relative.is_absolute() or ".." in relative.parts:
            raise InvalidSupplement(f"{where}: member {member.name!r} leaves the image root")
        if str(relative) == ".":
            continue
        target = into / relative
        _inside(into, target.parent, where, member.name)
        if relative.name == OPAQUE:
            for child in target.parent.iterdir() if target.parent.is_dir() else ():
                _remove(child)
            continue
        if relative.name.startswith(WHITEOUT):
            _remove(target.parent / relative.name.removeprefix(WHITEOUT))
            continue
        if member.isdir():
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                _remove(target)
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o700 | (member.mode & 0o7777))
            continue
        if not (member.isfile() or member.issym() or member.islnk()):
            continue  # device nodes, FIFOs: nothing a supplement patches
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove(target)
        if member.issym():
            os.symlink(member.linkname, target)
        elif member.islnk():
            source = into / PurePosixPath(member.linkname.lstrip("./"))
            _inside(into, source, where, member.name)
            shutil.copy2(source, target, follow_symlinks=False)
        else:
            data = layer.extractfile(member)
            assert data is not None
            with data, target.open("wb") as out:
                shutil.copyfileobj(data, out)
            target.chmod(member.mode & 0o7777)


def _inside(root: Path, path: Path, where: str, name: str) -> None:
    if not path.resolve().is_relative_to(root.resolve()):
        raise InvalidSupplement(f"{where}: member {name!r} leaves the image root")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def overlay_tree(base: Path, changes: Path, into: Path) -> Path:
    """``base`` with ``changes`` laid over it, as a new tree at ``into``.

    With ``--image`` the publisher gives only the fixed files; the build
    compares whole trees, so the patched tree is the image's with those
    files replaced. Unchanged files are hard links to the base's (the build
    reads a file shared by both trees as unchanged without hashing it).
    """
    shutil.copytree(base, into, symlinks=True, copy_function=os.link)
    for source in sorted(changes.rglob("*")):
        target = into / source.relative_to(changes)
        if source.is_dir() and not source.is_symlink():
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                _remove(target)
            target.mkdir(exist_ok=True)
            continue
        _remove(target)
        shutil.copy2(source, target, follow_symlinks=False)
    return into
