"""The OpenAPI 3.1 document of the worker's API, served at /openapi.json. Response bodies
are described by the same msgspec structs the handlers encode."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.http.bodies import SCHEMAS
from gateway.http.errors import ErrorBody
from gateway.settings import MAX_WAIT_S, VERSION
from gateway.transcript.render import FORMAT_NAMES


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    return {str(c): _json(_ref("ErrorBody"), "error") for c in codes}


def build(structs: dict[str, type] = SCHEMAS) -> dict[str, Any]:
    (_, components) = msgspec.json.schema_components([ErrorBody, *structs.values()],
                                                     ref_template="#/components/schemas/{name}")
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    wait = {"name": "wait", "in": "query", "required": False,
            "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S}}
    text = {"description": "text", "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Chorus batch worker", "version": VERSION,
                 "description": "The Speechmatics batch v2 job API of the batch persistent worker."},
        "paths": {
            "/v2/jobs": {
                "post": {
                    "summary": "Submit a job",
                    "parameters": [{"name": "X-SM-Processing-Data", "in": "header", "required": False,
                                    "schema": {"type": "string"}}],
                    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                        "type": "object", "required": ["config"],
                        "properties": {"config": {"type": "string"},
                                       "data_file": {"type": "string", "format": "binary"}}}}}},
                    "responses": {"201": _json(_ref("Created"), "accepted"), **_errors(400, 401, 413, 503)},
                },
                "get": {
                    "summary": "List jobs, newest first",
                    "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                        {"name": "created_before", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                        {"name": "created_after", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                    ],
                    "responses": {"200": _json(_ref("JobList"), "jobs"), **_errors(401, 422)},
                },
            },
            "/v2/jobs/{job_id}": {
                "get": {"summary": "A job's status", "parameters": [job_id, wait],
                        "responses": {"200": _json(_ref("JobEnvelope"), "the job"), **_errors(401, 404, 410, 422)}},
                "delete": {"summary": "Delete a job",
                           "parameters": [job_id, {"name": "force", "in": "query", "schema": {"type": "boolean"}}],
                           "responses": {"200": _json(_ref("JobEnvelope"), "deleted"),
                                         **_errors(401, 404, 410, 422, 423)}},
            },
            "/v2/jobs/{job_id}/transcript": {
                "get": {"summary": "The transcript of a finished job", "parameters": [
                    job_id, wait,
                    {"name": "format", "in": "query",
                     "schema": {"type": "string", "enum": list(FORMAT_NAMES)}}],
                        "responses": {"200": {"description": "json-v2, txt or srt", "content": {
                            "application/json": {"schema": {"type": "object"}},
                            "text/plain": {"schema": {"type": "string"}}}}, **_errors(401, 404, 410, 422)}},
            },
            "/v2/jobs/{job_id}/progress": {
                "get": {"summary": "How far a job got: its step, and the fraction of its audio its engine "
                                   "tasks have covered", "parameters": [job_id],
                        "responses": {"200": _json(_ref("JobProgressBody"), "progress"), **_errors(401, 404, 410)}},
            },
            "/v2/jobs/{job_id}/log": {
                "get": {"summary": "The job's log", "parameters": [job_id],
                        "responses": {"200": text, **_errors(401, 404, 410)}},
            },
            "/jobs": {"get": {"summary": "Capacity and active jobs",
                              "responses": {"200": _json(_ref("Capacity"), "capacity")}}},
            "/live": {"get": {"summary": "Liveness", "responses": {
                "200": _json({"type": "object"}, "live"), "503": _json({"type": "object"}, "not live")}}},
            "/ready": {"get": {"summary": "Readiness", "responses": {
                "200": _json({"type": "object"}, "an engine is free"),
                "503": _json({"type": "object"}, "every engine is busy")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": text}}},
        },
        "components": {"schemas": components},
    }
