"""``bsi keys …`` and ``bsi supplement …``: the Linux publisher's commands.

A publisher keeps root and targets keys offline and signs with them as a
separate step; snapshot and timestamp keys stay with the server. Every
command here is a thin layer over :mod:`bsi.cryptex` and :mod:`bsi.trust`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from bsi import durable
from bsi.agent.config import DEFAULT_CONTAINER_ENGINE
from bsi.agent.facts import parse_product_version, read_os_release
from bsi.agent.protocol import Request, check, read_json, unreachable
from bsi.commands.arguments import MAX_KEYS, whole_text
from bsi.cryptex import (
    Change,
    InvalidSupplement,
    SupplementSpec,
    build_bundle,
    changes_from_list,
    debian,
    describe,
    diff_trees,
    load_spec,
    parse_spec,
    read_manifest,
    rpm,
    updates,
    verify_bundle,
)
from bsi.cryptex.image import image_tree, overlay_tree
from bsi.cryptex.updates import PackageFormat
from bsi.domain.versions import Build, ExtraVersion
from bsi.errors import BsiError, InvalidInput, InvalidVersion, ServerUnavailable
from bsi.server.paths import SYNC_REPOSITORY_PATH
from bsi.trust import (
    PASSPHRASE_ENV,
    available_signers,
    discard_staged,
    expiries_from,
    finalize,
    init_keys,
    load_signer,
    publish_target,
    refresh_timestamp,
    repository_status,
    rotate_key,
    sign_role,
    stage_role,
    target_name,
)
from bsi.trust.keys import passphrase_from_env

keys_app = typer.Typer(
    help="TUF keys and metadata of a supplement repository (python-tuf).", no_args_is_help=True
)
supplement_app = typer.Typer(
    help="Linux supplements: build, verify and publish sealed cryptex bundles.",
    no_args_is_help=True,
)
console = Console(stderr=True, highlight=False)

RepoDir = Annotated[
    Path,
    typer.Option(
        "--repo-dir",
        help="The TUF repository: metadata/ and targets/ are served to devices "
        "(staged/ and bsi-trust.json must not be).",
    ),
]
KeysDir = Annotated[
    Path,
    typer.Option("--keys-dir", help="Where the key files live (root/targets may be offline)."),
]
Role = Annotated[str, typer.Argument(help="targets or root")]
API_KEY_ENV = "BSI_API_KEY"


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    pairs = {}
    for value in values or []:
        role, sep, setting = value.partition("=")
        if not sep or not role or not setting:
            raise InvalidInput(
                f"{option} {value!r} is not ROLE=VALUE", hint=f"e.g. {option} root=2"
            )
        pairs[role] = setting
    return pairs


def _counts(values: list[str] | None, option: str) -> dict[str, int]:
    counts = {}
    for role, text in _pairs(values, option).items():
        counts[role] = whole_text(text, f"{option} {role}", 1, MAX_KEYS)
    return counts


@keys_app.command("init")
def keys_init(
    keys_dir: KeysDir,
    repo_dir: RepoDir,
    threshold: Annotated[
        list[str] | None, typer.Option(help="ROLE=N signatures needed (default 1). Repeatable.")
    ] = None,
    count: Annotated[
        list[str] | None, typer.Option(help="ROLE=N keys to make (default: the threshold).")
    ] = None,
    expires: Annotated[
        list[str] | None,
        typer.Option(help="ROLE=PERIOD, e.g. timestamp=12h, targets=90d (defaults 1y/90d/7d/1d)."),
    ] = None,
) -> None:
    """Create root, targets, snapshot and timestamp keys (ed25519) and version 1 of the metadata.

    Set BSI_TUF_KEY_PASSPHRASE to encrypt the offline keys (root, targets).
    Copy metadata/1.root.json to devices: it is their trust anchor.
    """
    result = init_keys(
        keys_dir,
        repo_dir,
        thresholds=_counts(threshold, "--threshold"),
        counts=_counts(count, "--count"),
        expires=expiries_from(_pairs(expires, "--expires")),
        passphrase=passphrase_from_env(),
    )
    for key in result.keys:
        console.print(f"{key.role:<9} key {key.path}  (keyid {key.keyid[:16]}…)")
    console.print(f"trust anchor for devices: {result.root_path}")
    if passphrase_from_env() is None:
        console.print(f"[yellow]offline keys are not encrypted; set {PASSPHRASE_ENV} to do so[/]")


@keys_app.command("stage")
def keys_stage(
    role: Role,
    repo_dir: RepoDir,
    remove: Annotated[list[str] | None, typer.Option(help="Drop this target. Repeatable.")] = None,
) -> None:
    """Start a new version of targets or root, to be signed offline with 'bsi keys sign'."""
    stage_role(repo_dir, role, remove_targets=remove or ())
    console.print(f"staged a new {role} version; sign it with 'bsi keys sign {role}'")


@keys_app.command("sign")
def keys_sign(
    role: Role,
    repo_dir: RepoDir,
    key: Annotated[Path, typer.Option(help="A private key file of the role.")],
) -> None:
    """Add one signature to the staged version of a role."""
    status = sign_role(repo_dir, role, key, passphrase=passphrase_from_env())
    console.print(status.describe())
    if status.verified:
        console.print(f"threshold met: publish with 'bsi keys finalize {role}'")


@keys_app.command("finalize")
def keys_finalize(role: Role, repo_dir: RepoDir, keys_dir: KeysDir) -> None:
    """Publish the staged version once enough signatures are on it."""
    result = finalize(repo_dir, keys_dir, role, passphrase=passphrase_from_env())
    console.print(result.describe())


@keys_app.command("discard")
def keys_discard(role: Role, repo_dir: RepoDir) -> None:
    """Throw away a staged version."""
    discard_staged(repo_dir, role)
    console.print(f"discarded the staged {role} version")


@keys_app.command("status")
def keys_status(repo_dir: RepoDir) -> None:
    """Served versions and expiries, and staged versions with their signatures."""
    typer.echo(repository_status(repo_dir).describe())


@keys_app.command("rotate")
def keys_rotate(
    role: Annotated[str, typer.Argument(help="root, targets, snapshot or timestamp")],
    repo_dir: RepoDir,
    keys_dir: KeysDir,
    root_key: Annotated[
        list[Path] | None, typer.Option(help="A current root key to sign with. Repeatable.")
    ] = None,
    count: Annotated[
        int | None, typer.Option(min=1, max=MAX_KEYS, help="New keys to make.")
    ] = None,
    threshold: Annotated[
        int | None, typer.Option(min=1, max=MAX_KEYS, help="New threshold.")
    ] = None,
) -> None:
    """Replace a role's keys in a new root version (signed by old and new root keys)."""
    passphrase = passphrase_from_env()
    signers = [load_signer(path, passphrase=passphrase) for path in root_key or []]
    result = rotate_key(
        repo_dir,
        keys_dir,
        role,
        signers=signers,
        count=count,
        threshold=threshold,
        passphrase=passphrase,
    )
    for key in result.new_keys:
        console.print(f"new {key.role} key {key.path}")
    if result.published is not None:
        console.print(result.published.describe())
    else:
        console.print(result.status.describe())
        console.print("sign with 'bsi keys sign root', then 'bsi keys finalize root'")


@keys_app.command("refresh")
def keys_refresh(repo_dir: RepoDir, keys_dir: KeysDir) -> None:
    """Re-sign timestamp (and snapshot when due) with the online keys; run it from a timer."""
    result = refresh_timestamp(repo_dir, keys_dir, passphrase=passphrase_from_env())
    console.print(result.describe())
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}")


@supplement_app.command("build")
def supplement_build(
    out: Annotated[Path, typer.Option(help="Where to write the bundle.")],
    spec: Annotated[
        Path | None,
        typer.Option(help="The supplement spec (YAML); derived when building --from-deb."),
    ] = None,
    base: Annotated[
        Path | None, typer.Option(help="The base tree: the prerequisite's files.")
    ] = None,
    patched: Annotated[Path | None, typer.Option(help="The patched tree.")] = None,
    image: Annotated[
        str | None,
        typer.Option(
            help="Instead of --base: a container image (a reference in --container-engine, or "
            "a 'docker save' / OCI archive file) whose files are the base tree; --patched "
            "then holds only the fixed files."
        ),
    ] = None,
    container_engine: Annotated[
        str,
        typer.Option(help="With --image REF: the Docker Engine API to export it from."),
    ] = DEFAULT_CONTAINER_ENGINE,
    from_deb: Annotated[
        Path | None,
        typer.Option(help="The fixed package (.deb): its files are the patched tree."),
    ] = None,
    base_deb: Annotated[
        Path | None, typer.Option(help="With --from-deb: the package version hosts run now.")
    ] = None,
    from_rpm: Annotated[
        Path | None,
        typer.Option(help="The fixed package (.rpm): its files are the patched tree."),
    ] = None,
    base_rpm: Annotated[
        Path | None, typer.Option(help="With --from-rpm: the package version hosts run now.")
    ] = None,
    base_root: Annotated[
        Path | None,
        typer.Option(help="With --from-deb/--from-rpm: a root with the base version installed."),
    ] = None,
    platform: Annotated[
        str | None, typer.Option(help="With --from-deb: os-release ID (default: the base's).")
    ] = None,
    product_version: Annotated[
        str | None,
        typer.Option(help="With --from-deb: os-release VERSION_ID (default: the base's)."),
    ] = None,
    extra_version: Annotated[
        str, typer.Option(help="With --from-deb: the letter, (a) for a first supplement.")
    ] = "(a)",
    build: Annotated[
        str | None,
        typer.Option(help="With --from-deb: the supplemental build (default: derived)."),
    ] = None,
    files: Annotated[
        Path | None,
        typer.Option(
            help="Only these paths (relative to the trees, one per line; '-path' removes)."
        ),
    ] = None,
    previous: Annotated[
        Path | None, typer.Option(help="The earlier letter's bundle, for the cumulative check.")
    ] = None,
    allow_dropping: Annotated[
        bool, typer.Option(help="Let this letter stop patching files the previous one patched.")
    ] = False,
    keep_docs: Annotated[
        bool,
        typer.Option(
            help="With --from-deb/--from-rpm: carry documentation too (/usr/share/doc, "
            "changelogs, man and info pages), which is left out by default."
        ),
    ] = False,
    deltas: Annotated[
        bool,
        typer.Option(
            "--deltas/--whole-files",
            help="Carry each changed file as a binary delta against its base when smaller "
            "(the default), or every file whole (for hosts whose base is not on disk, "
            "e.g. an active overlay letter).",
        ),
    ] = True,
) -> None:
    """Build a sealed, deterministic bundle of only the added, changed and removed files.

    Either from two trees (--spec, --base, --patched; --image instead of --base takes
    the base tree from a container image) or from a distribution's
    security update (--from-deb NEW.deb with --base-deb OLD.deb or --base-root /;
    --from-rpm NEW.rpm with --base-rpm OLD.rpm or --base-root /): then the
    prerequisite (the base package version), fixed_in (the new one),
    the component and the units to relaunch are derived, documentation is left
    out (--keep-docs keeps it), and the spec used is written next to the bundle
    (OUT without .cryptex, plus .spec.yaml). A changed file travels as a bsdiff4
    delta against its base when that is smaller (--whole-files: never).
    """
    earlier = read_manifest(previous) if previous else None
    with _progress() as progress, tempfile.TemporaryDirectory(prefix="bsi-build-") as work:
        task = progress.add_task("scanning", total=None)

        def report(phase: str, done: int, total: int) -> None:
            progress.update(task, description=phase, completed=done, total=total or None)

        written_spec: tuple[Path, str] | None = None
        source = _package_source(from_deb, base_deb, from_rpm, base_rpm)
        if source is not None:
            package_format, new_package, base_package = source
            loaded, changes, written_spec = _from_package(
                package_format,
                new_package,
                base_file=base_package,
                base_root=base_root,
                spec=spec,
                out=out,
                work=Path(work),
                platform=platform,
                product_version=product_version,
                extra=extra_version,
                build=build,
                conflicting=[name for name, v in (("--base", base), ("--patched", patched)) if v],
                keep_docs=keep_docs,
                progress=report,
            )
        else:
            if image is not None:
                if base is not None:
                    raise InvalidInput(
                        "--image and --base both name the base tree", hint="give one of them"
                    )
                base = Path(work) / "image"
                image_id = image_tree(image, base, engine=container_engine)
                _check_image(spec, image, image_id)
                if patched is not None:
                    patched = overlay_tree(base, patched, Path(work) / "patched")
            given = (("--spec", spec), ("--base", base), ("--patched", patched))
            missing = [name for name, value in given if value is None]
            if missing:
                raise InvalidInput(
                    f"missing {', '.join(missing)}",
                    hint="build from two trees (--spec, --base, --patched) or from a package "
                    "update (--from-deb NEW.deb --base-deb OLD.deb | --base-root /, or "
                    "--from-rpm NEW.rpm --base-rpm OLD.rpm | --base-root /)",
                )
            assert spec is not None
            assert base is not None
            assert patched is not None
            loaded = load_spec(spec)
            if files is not None:
                lines = files.read_text(encoding="utf-8").splitlines()
                changes = changes_from_list(base, patched, lines, progress=report)
            else:
                changes = diff_trees(base, patched, progress=report)
        result = build_bundle(
            loaded,
            changes,
            out,
            previous=earlier,
            allow_dropping=allow_dropping,
            deltas=deltas,
            progress=report,
        )
        if written_spec is not None:
            path, text = written_spec
            durable.write_atomic(path, text.encode("utf-8"))
    for line in describe(result.manifest):
        typer.echo(line)
    for dropped in result.dropped:
        console.print(f"[yellow]no longer patched (allowed):[/] {dropped}")
    if written_spec is not None:
        console.print(f"spec used: {written_spec[0]} (review it; rebuild with --spec)")
    console.print(f"{result.path}: {result.size} bytes, sha256 {result.sha256}")


def _check_image(spec: Path | None, image: str, image_id: str) -> None:
    """Refuse a spec whose image prerequisite names another digest than ``image``'s."""
    if spec is None:
        return
    wanted = load_spec(spec).prerequisite.image
    if wanted is not None and wanted.digest is not None and wanted.digest != image_id:
        raise InvalidInput(
            f"{spec}: the prerequisite names image {wanted.digest}, but {image} is {image_id}",
            hint="build from the image the supplement is for, or fix the spec's digest",
        )


def _package_source(
    from_deb: Path | None, base_deb: Path | None, from_rpm: Path | None, base_rpm: Path | None
) -> tuple[PackageFormat, Path, Path | None] | None:
    """Which package format the build is from, if any: one format, its own base option."""
    chosen = [
        (fmt, new, base)
        for fmt, new, base in ((debian.DEB, from_deb, base_deb), (rpm.RPM, from_rpm, base_rpm))
        if new is not None or base is not None
    ]
    if len(chosen) > 1:
        raise InvalidInput(
            "--from-deb/--base-deb and --from-rpm/--base-rpm do not mix",
            hint="build from one package format: the one the hosts install",
        )
    if not chosen:
        return None
    fmt, new, base = chosen[0]
    if new is None:
        raise InvalidInput(f"{fmt.base_option} needs {fmt.option} NEW (the fixed package)")
    return fmt, new, base


def _from_package(
    fmt: PackageFormat,
    new_file: Path,
    *,
    base_file: Path | None,
    base_root: Path | None,
    spec: Path | None,
    out: Path,
    work: Path,
    platform: str | None,
    product_version: str | None,
    extra: str,
    build: str | None,
    conflicting: list[str],
    keep_docs: bool,
    progress: Callable[[str, int, int], None],
) -> tuple[SupplementSpec, list[Change], tuple[Path, str]]:
    """The spec and changes of a supplement built from a package update (see ``updates``)."""
    if conflicting:
        raise InvalidInput(
            f"{fmt.option} takes its files from the packages, not from {' and '.join(conflicting)}"
        )
    if (base_file is None) == (base_root is None):
        raise InvalidInput(
            f"{fmt.option} needs exactly one base: {fmt.base_option} OLD or --base-root ROOT",
            hint="e.g. --base-root / on a host that runs the version to patch",
        )
    new = fmt.unpack(new_file, work / "new")
    if base_file is not None:
        old = fmt.unpack(base_file, work / "old")
        base_package, base_tree = old.package, old.tree
    else:
        assert base_root is not None
        base_package = fmt.installed(base_root, new.name, new.package.arch)
        base_tree = fmt.installed_tree(base_root, base_package, work / "old")
    updates.check_update(fmt.manager, base_package, new.package, option=fmt.option)
    changes = diff_trees(base_tree, new.tree, progress=progress)
    if not keep_docs:
        docs = [c.entry.path for c in changes if updates.is_documentation(c.entry.path)]
        if docs and len(docs) == len(changes):
            raise InvalidSupplement(
                f"{new.package.display()} changes only documentation ({len(docs)} file(s), "
                f"e.g. /{docs[0]}), which a supplement leaves out by default",
                hint="give --keep-docs to carry it anyway",
            )
        changes = [c for c in changes if not updates.is_documentation(c.entry.path)]
    spec_path = out.with_name(out.name.removesuffix(".cryptex") + ".spec.yaml")
    if spec is not None:
        return load_spec(spec), changes, (spec_path, spec.read_text(encoding="utf-8"))
    release = read_os_release(base_root or Path("/"))
    values = release.values if release else {}
    chosen_platform = platform or values.get("ID")
    chosen_version = product_version or values.get("VERSION_ID")
    if not chosen_platform or not chosen_version:
        raise InvalidInput(
            "cannot tell the platform and product version the supplement is for",
            hint="give --platform debian --product-version 12 (os-release ID and VERSION_ID)",
        )
    command = " ".join(
        [f"bsi supplement build {fmt.option}", str(new_file)]
        + ([fmt.base_option, str(base_file)] if base_file else ["--base-root", str(base_root)])
        + ["--out", str(out)]
        + (["--keep-docs"] if keep_docs else [])
    )
    try:
        derived = updates.derive_spec(
            base=base_package,
            new=new,
            changed_paths=[c.entry.path for c in changes],
            platform=chosen_platform,
            product_version=str(parse_product_version(chosen_version)),
            extra=ExtraVersion.parse(extra),
            build=Build.parse(build) if build else None,
            command=command,
        )
    except InvalidVersion as error:
        raise InvalidInput(error.message, hint=error.hint) from None
    return parse_spec(derived.text, source=str(spec_path)), changes, (spec_path, derived.text)


@supplement_app.command("init")
def supplement_init(
    path: Annotated[Path, typer.Argument(help="Where to write the example spec.")] = Path(
        "supplement.yaml"
    ),
) -> None:
    """Write a commented example spec (a library fix on a package prerequisite) to edit."""
    text = (resources.files("bsi") / "data" / "example-spec.yaml").read_text(encoding="utf-8")
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise InvalidInput(
            f"{path} exists; not overwritten", hint="give another path, or remove it first"
        ) from None
    console.print(f"wrote {path}: edit it, then 'bsi supplement build --spec {path} ...'")


@supplement_app.command("verify")
def supplement_verify(
    bundle: Annotated[Path, typer.Argument(help="The bundle to check.")],
    repo_dir: Annotated[
        Path | None,
        typer.Option(help="Also check that this TUF repository signs exactly this bundle."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Check the manifest and every payload's hash (and the TUF signature), and show the changes."""
    manifest = verify_bundle(bundle)
    if repo_dir is not None:
        from bsi.trust.local import verify_published

        name = verify_published(repo_dir, bundle, manifest.supplement_fields())
        console.print(f"signed by {repo_dir} as target {name}")
    if as_json:
        sys.stdout.write(json.dumps(json.loads(manifest.to_json()), indent=2) + "\n")
        return
    typer.echo(manifest.display())
    for line in describe(manifest):
        typer.echo(line)
    modes = {entry.path: entry.mode or 0 for entry in manifest.payloads}
    for path in manifest.setuid:
        typer.echo(f"set-user-ID/set-group-ID, as its spec declares: /{path} ({modes[path]:04o})")


@supplement_app.command("publish")
def supplement_publish(
    bundle: Annotated[Path, typer.Argument(help="A bundle built by 'bsi supplement build'.")],
    repo_dir: RepoDir,
    keys_dir: KeysDir,
    key: Annotated[
        list[Path] | None,
        typer.Option(help="Targets key file(s) to sign with (default: those in --keys-dir)."),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            help="A running bsi server that hosts --repo-dir: tell it to re-read the "
            f"repository now (POST {SYNC_REPOSITORY_PATH})."
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar=API_KEY_ENV, help="With --server: an admin API key of that server."),
    ] = None,
) -> None:
    """Sign the bundle into TUF targets metadata and refresh snapshot and timestamp.

    The supplement's fields are read from the verified bundle and signed as
    the target's custom metadata with today's date as its posting date; the
    target is named <platform>/<supplemental build>.cryptex. A server hosting
    the repository (bsi serve --tuf-repo-dir) adds it to its catalogue within
    seconds; with --server it is told at once, and a refusal is an error.
    """
    if server is not None:
        _check_server(server, api_key)
    manifest = verify_bundle(bundle)
    fields = manifest.supplement_fields(posted=datetime.now(UTC).date()).document()
    name = target_name(manifest.platform, manifest.supplemental_build)
    passphrase = passphrase_from_env()
    signers = (
        [load_signer(path, passphrase=passphrase) for path in key]
        if key
        else available_signers(repo_dir, keys_dir, "targets", passphrase=passphrase)
    )
    result = publish_target(
        repo_dir,
        keys_dir,
        name,
        bundle,
        fields,
        signers=signers,
        passphrase=passphrase,
        immutable=True,  # a supplemental build, once published, never changes bytes
    )
    console.print(f"published {manifest.display()} as {name}")
    console.print(result.describe())
    if server is not None:
        assert api_key is not None
        listed = _notify_server(server, api_key, published=name)
        console.print(f"{server} re-read the repository: it lists {listed} supplement(s)")


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


def _check_server(server: str, api_key: str | None) -> None:
    """Refuse ``--server`` without a usable URL or key before anything is signed."""
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(
            f"--server {server!r} is not an http(s) URL",
            hint="e.g. --server https://bsi.example.net",
        )
    if not api_key:
        raise InvalidInput(
            "--server needs an admin API key of that server",
            hint=f"give --api-key KEY or set {API_KEY_ENV} "
            "(make one with 'bsi api-key create NAME --role admin')",
        )


def _notify_server(server: str, api_key: str, *, published: str) -> int:
    """``POST`` the sync to ``server``; the number of supplements it lists after re-reading.

    Raises :class:`~bsi.errors.ServerRefused` (or ``Unauthorized``) with the
    server's own message when it refuses, :class:`~bsi.errors.ServerUnavailable`
    when it cannot be reached; either says the bundle itself is published.
    """
    request = Request("POST", SYNC_REPOSITORY_PATH, headers={"Authorization": f"Bearer {api_key}"})
    hint = (
        f"{published} is published; a server hosting this repository picks it up within "
        "seconds by itself; check --server and the key, then publish again to notify it"
    )
    try:
        try:
            response = httpx.post(
                server.rstrip("/") + request.path, headers=dict(request.headers), timeout=30
            )
        except httpx.HTTPError as error:
            raise unreachable(server, request, error) from None
        reply = _Reply(response.status_code, response.headers, response.content)
        body = read_json(request, check(request, reply))
        return int(body["supplements"])
    except BsiError as error:
        raise type(error)(
            f"{server} did not take the notification: {error.message}", hint=hint
        ) from None
    except (KeyError, TypeError, ValueError):
        raise ServerUnavailable(
            f"{server} answered the notification with a body bsi cannot read", hint=hint
        ) from None


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    )
