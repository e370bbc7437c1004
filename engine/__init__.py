"""The engine process: holds its models, and decodes, runs VAD, plans splits, identifies
languages, transcribes and diarizes the work the gateway hands it over its pipe. No HTTP.

May import: shared; never gateway.
"""
