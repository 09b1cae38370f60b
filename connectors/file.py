"""The ``file`` kind: a local folder as an endpoint, with write, read, list, move and delete.

```yaml
endpoints:
  outbox:
    file: {folder: "${env.OUTBOX_DIR || 'data/outbox'}"}   # relative to the flow file
```

Writes are atomic (a hidden ``.NAME.<random>.part`` first, then a rename; the file sources
skip such names).  Names are relative paths inside the folder: ``../x`` is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connectors._file_ops import FILE_OPERATIONS, FileOperations
from connectors._folders import LocalFolder
from connectors.base import Connector, register_connector


@register_connector("file")
class FileConnector(FileOperations, Connector):
    SUMMARY = "A local folder: write files atomically, read, list, move and delete them."
    SCHEMA = {
        "type": "object", "additionalProperties": False, "required": ["folder"],
        "description": "A folder on the engine's file system.",
        "properties": {
            "folder": {"type": "string", "description": "The folder (relative to the flow file); created when "
                                                       "first written to."},
        },
    }
    OPERATIONS = FILE_OPERATIONS

    def __init__(self, name: str, config: dict[str, Any], context: Any = None) -> None:
        super().__init__(name, config, context)
        self.base = (Path(self.context.folder) / str(config["folder"])).resolve()
        self.targets = (str(self.base),)

    def folder(self, sub: str = "") -> LocalFolder:
        return LocalFolder((self.base / sub).resolve() if sub else self.base)

    def health(self) -> dict[str, Any]:
        return {"folder": str(self.base), "exists": self.base.is_dir()}
