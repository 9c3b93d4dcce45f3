"""User-defined tables of the Service Layer simulator (`UserTablesMD`, `UserFieldsMD`, `U_<TABLE>`).

The pipeline writes its audit records to one: it creates the table and its fields (creating what exists
is an error it treats as success), then writes rows keyed by `Code` (at most 50 characters), so a
deterministic Code makes the write idempotent and a repeat answers an error recognisable as "exists".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from b1twilio_sim.sap_b1_data import FieldTypes
from b1twilio_sim.sap_b1_errors import B1Failure, already_exists, bad_request

UDT_TYPES = {"db_Alpha": "str", "db_Memo": "str", "db_Numeric": "int", "db_Float": "float", "db_Date": "date"}
UDT_TABLE_TYPES = {"bott_NoObject", "bott_NoObjectAutoIncrement", "bott_Document", "bott_DocumentLines",
                   "bott_MasterData", "bott_MasterDataLines"}


@dataclass
class UserTable:
    """One user table: its metadata, its fields (without the `U_` prefix) and its rows by Code."""

    name: str
    meta: dict[str, Any]
    fields: dict[str, dict[str, Any]]
    rows: dict[str, dict[str, Any]]

    def field_types(self) -> FieldTypes:
        types: FieldTypes = {"Code": "str", "Name": "str"}
        types.update({f"U_{name}": UDT_TYPES[meta["Type"]] for name, meta in self.fields.items()})
        return types

    def check_values(self, values: dict[str, Any]) -> dict[str, Any]:
        """Known fields only, strings within their size (Code 50, Name 100, a field its `Size`)."""
        types = self.field_types()
        for name, value in values.items():
            if name not in types:
                raise bad_request(f"Property '{name}' of '{self.name}' is invalid")
            limit = 50 if name == "Code" else 100 if name == "Name" else self.fields[name[2:]]["Size"]
            if value is not None and types[name] == "str" and len(str(value)) > limit:
                raise bad_request(f"Value too long in property '{name}' of '{self.name}' (max {limit})")
        return dict(values)

    def add_row(self, body: dict[str, Any]) -> dict[str, Any]:
        values = self.check_values(body)
        code = values.get("Code")
        if not code:
            raise bad_request(f"Code is required for '@{self.name}'")
        if code in self.rows:
            raise already_exists(f"'@{self.name}'")
        row = {"Code": code, "Name": values.get("Name") or code}
        row.update({f"U_{name}": None for name in self.fields})
        row.update(values)
        self.rows[code] = row
        return dict(row)

    def add_field(self, name: str, field_type: str, body: dict[str, Any]) -> dict[str, Any]:
        """Add a field checked by `field_definition`."""
        if name in self.fields:
            raise already_exists("User Fields (CUFD)")
        meta = {"Name": name, "Type": field_type, "Size": int(body.get("Size") or 10),
                "Description": body.get("Description") or name, "SubType": body.get("SubType", "st_None"),
                "TableName": f"@{self.name}", "FieldID": len(self.fields)}
        self.fields[name] = meta
        return dict(meta)


def new_user_table(body: dict[str, Any]) -> UserTable:
    """A table from a `UserTablesMD` create body (name: letters, digits, underscore, at most 19)."""
    name = body.get("TableName")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,18}", name):
        raise bad_request("TableName is required: letters, digits, underscore, at most 19 characters")
    table_type = body.get("TableType", "bott_NoObject")
    if table_type not in UDT_TABLE_TYPES:
        raise bad_request(f"Invalid TableType '{table_type}'")
    meta = {"TableName": name, "TableDescription": str(body.get("TableDescription") or name)[:30],
            "TableType": table_type, "Archivable": "tNO"}
    return UserTable(name, meta, {}, {})


def field_definition(body: dict[str, Any]) -> tuple[str, str, str]:
    """(table without its '@', field name, field type) from a `UserFieldsMD` create body."""
    table_name = str(body.get("TableName") or "")
    name = body.get("Name")
    if not table_name.startswith("@"):
        raise bad_request(f"TableName '{table_name}' is not a user table: use '@' + the table name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,17}", name):
        raise bad_request("Name is required: letters, digits, underscore, at most 18 characters")
    field_type = body.get("Type", "db_Alpha")
    if field_type not in UDT_TYPES:
        raise bad_request(f"Invalid Type '{field_type}'")
    return table_name[1:], name, field_type


def no_such_table(name: str) -> B1Failure:
    return B1Failure(404, -1000, f"Unrecognized resource path: U_{name} (no such user table)")
