"""Generated protobuf messages (see proto/ and scripts/gen_proto.py)."""
