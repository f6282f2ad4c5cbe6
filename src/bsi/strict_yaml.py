"""YAML as bsi reads files people write (specs, agent.yaml): safe, and no silent duplicates.

PyYAML keeps the last of two equal keys without a word; in a supplement spec
or an agent's configuration that hides a mistake, so a repeated key is an
error naming the line.
"""

from __future__ import annotations

import yaml


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice instead of keeping the last."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict[object, object]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_strict(text: str) -> object:
    """Parse ``text``; raises ``yaml.YAMLError`` (with a line) for bad YAML or repeated keys."""
    return yaml.load(text, Loader=StrictLoader)
