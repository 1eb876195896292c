"""The operator registry (DESIGN §2, pinned): which verifier keys speak for which origin, when.

```yaml
operators:
  - origin: relay.example/eu-1
    keys:
      - {vkey: "relay.example/eu-1+1a2b3c4d+AU...", valid_from_seq: 0, valid_until_seq: null}
    url: https://relay.example/eu-1   # optional: where `relay witness` polls /v1/operator
```
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["OperatorEntry", "Registry", "RegistryError", "RegistryKey", "register_own_key"]


class RegistryError(Exception):
    """The registry file is missing, unreadable or malformed."""


class RegistryKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vkey: str
    valid_from_seq: int = Field(0, ge=0)
    valid_until_seq: int | None = Field(None, ge=0)


class OperatorEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    origin: str
    keys: list[RegistryKey]
    url: str | None = Field(
        None,
        pattern=r"^https?://[^\s]+$",
        description="Base URL of the operator relay (its public listener); `relay witness` "
        "polls <url>/v1/operator and <url>/v1/proof/consistency. Optional.",
    )


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operators: list[OperatorEntry] = Field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Registry:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            return cls.model_validate(data)
        except OSError as exc:
            raise RegistryError(f"cannot read registry {path}: {exc.strerror}") from exc
        except (yaml.YAMLError, ValidationError) as exc:
            raise RegistryError(f"registry {path} is malformed: {exc}") from exc

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(
            yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
        )
        os.replace(tmp, path)


def register_own_key(path: Path, origin: str, vkey: str) -> bool:
    """Add this relay's key to the registry unless its origin is already there.

    An origin that is present is left alone: its entries are the lead's (or a rotation's)
    decision, not something a restarting relay should rewrite. Returns True if it wrote.
    """
    registry = Registry.load(path) if path.exists() else Registry()
    if any(entry.origin == origin for entry in registry.operators):
        return False
    registry.operators.append(OperatorEntry(origin=origin, keys=[RegistryKey(vkey=vkey)]))
    registry.save(path)
    return True
