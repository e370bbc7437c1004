"""Pure transcript shaping: the job config and its parsing, merging split segments, speaker
labels and identifiers, the option rewrites, language identification verdicts, the json-v2
model and the txt/srt renderers. Typed inputs in (the config, what the engines heard, the
job's facts), files out; no I/O, no job object.

May import: gateway.errors, gateway.settings, shared. Never gateway.jobs or gateway.http.
"""
