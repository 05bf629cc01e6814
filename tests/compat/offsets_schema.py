"""Apache Kafka's published schemas for the records of `__consumer_offsets`, and a decoder
driven by them, independent of Tern's own codec (crates/group/src/records.rs).

The definitions below transcribe Kafka's message JSON files in
group-coordinator/src/main/resources/common/message/ (OffsetCommitKey, OffsetCommitValue,
GroupMetadataKey, GroupMetadataValue) into Python data: per field its name, type, the versions
it is present in, and the versions in which it is nullable. The decoder implements the JSON
message format's rules: `versions`/`nullableVersions` ranges, and for `flexibleVersions`
compact (varint length + 1) strings, bytes and arrays plus a tagged-field section per struct.

A key starts with an int16 record type (0 or 1: offset commit, 2: group metadata); a value
starts with its int16 schema version.
"""

import struct


def in_range(spec, version):
    """Kafka's version range syntax: "none", "N", "N+", "N-M"."""
    if spec is None or spec == "none":
        return False
    if spec.endswith("+"):
        return version >= int(spec[:-1])
    if "-" in spec:
        lo, hi = spec.split("-")
        return int(lo) <= version <= int(hi)
    return version == int(spec)


# (name, type, versions, nullableVersions)
MEMBER_METADATA = [
    ("memberId", "string", "0+", None),
    ("groupInstanceId", "string", "3+", "3+"),
    ("clientId", "string", "0+", None),
    ("clientHost", "string", "0+", None),
    ("rebalanceTimeout", "int32", "1+", None),
    ("sessionTimeout", "int32", "0+", None),
    ("subscription", "bytes", "0+", None),
    ("assignment", "bytes", "0+", None),
]

SCHEMAS = {
    "OffsetCommitKey": {
        "validVersions": "0",
        "flexibleVersions": "none",
        "fields": [
            ("group", "string", "0", None),
            ("topic", "string", "0", None),
            ("partition", "int32", "0", None),
        ],
    },
    "OffsetCommitValue": {
        "validVersions": "0-4",
        "flexibleVersions": "4+",
        "fields": [
            ("offset", "int64", "0+", None),
            ("leaderEpoch", "int32", "3+", None),
            ("metadata", "string", "0+", None),
            ("commitTimestamp", "int64", "0+", None),
            ("expireTimestamp", "int64", "1", None),
        ],
    },
    "GroupMetadataKey": {
        "validVersions": "0",
        "flexibleVersions": "none",
        "fields": [("group", "string", "0", None)],
    },
    "GroupMetadataValue": {
        "validVersions": "0-4",
        "flexibleVersions": "4+",
        "fields": [
            ("protocolType", "string", "0+", None),
            ("generation", "int32", "0+", None),
            ("protocol", "string", "0+", "0+"),
            ("leader", "string", "0+", "0+"),
            ("currentStateTimestamp", "int64", "2+", None),
            ("members", "[]MemberMetadata", "0+", None),
        ],
    },
}
STRUCTS = {"MemberMetadata": MEMBER_METADATA}


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"truncated: want {n} bytes at {self.pos} of {len(self.data)}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def fixed(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def uvarint(self):
        shift = result = 0
        while True:
            b = self.take(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 35:
                raise ValueError("varint too long")


def read_length(r, flexible, nullable, what, fixed_fmt):
    n = r.uvarint() - 1 if flexible else r.fixed(fixed_fmt)
    if n < 0:
        if not nullable:
            raise ValueError(f"null {what} where the schema does not allow it")
        return None
    return n


def read_field(r, ftype, version, flexible, nullable):
    if ftype == "int32":
        return r.fixed(">i")
    if ftype == "int64":
        return r.fixed(">q")
    if ftype == "int16":
        return r.fixed(">h")
    if ftype == "string":
        n = read_length(r, flexible, nullable, "string", ">h")
        return None if n is None else r.take(n).decode("utf-8")
    if ftype == "bytes":
        n = read_length(r, flexible, nullable, "bytes", ">i")
        return None if n is None else r.take(n)
    if ftype.startswith("[]"):
        n = read_length(r, flexible, nullable, "array", ">i")
        if n is None:
            return None
        fields = STRUCTS[ftype[2:]]
        return [read_struct(r, fields, version, flexible) for _ in range(n)]
    raise ValueError(f"type {ftype} is not used by these schemas")


def read_struct(r, fields, version, flexible):
    out = {}
    for name, ftype, versions, nullable_versions in fields:
        if in_range(versions, version):
            out[name] = read_field(r, ftype, version, flexible, in_range(nullable_versions, version))
    if flexible:
        for _ in range(r.uvarint()):  # tagged fields: none are defined in these schemas
            r.uvarint()
            r.take(r.uvarint())
    return out


def decode(schema_name, data: bytes, version: int):
    schema = SCHEMAS[schema_name]
    if not in_range(schema["validVersions"], version):
        raise ValueError(f"{schema_name} version {version} is not valid ({schema['validVersions']})")
    r = Reader(data)
    out = read_struct(r, schema["fields"], version, in_range(schema["flexibleVersions"], version))
    if r.pos != len(data):
        raise ValueError(f"{schema_name} v{version}: {len(data) - r.pos} bytes left over")
    return out


def decode_record(key: bytes, value):
    """(kind, key fields, value version, value fields or None for a tombstone)."""
    record_type = struct.unpack(">h", key[:2])[0]
    if record_type in (0, 1):
        kind, key_schema, value_schema = "offset", "OffsetCommitKey", "OffsetCommitValue"
    elif record_type == 2:
        kind, key_schema, value_schema = "group", "GroupMetadataKey", "GroupMetadataValue"
    else:
        raise ValueError(f"record type {record_type} is not an offset commit or group metadata record")
    key_fields = decode(key_schema, key[2:], 0)
    if value is None:
        return kind, key_fields, None, None
    version = struct.unpack(">h", value[:2])[0]
    return kind, key_fields, version, decode(value_schema, value[2:], version)
