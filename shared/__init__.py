"""What the gateway and the engines both use: the pipe protocol (msgspec structs as msgpack).

May import: nothing of Chorus.
"""
