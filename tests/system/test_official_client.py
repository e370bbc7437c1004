"""The official `speechmatics-batch` client, unchanged, against the real server."""

from __future__ import annotations

import asyncio

from speechmatics.batch import AsyncClient, Client, FormatType, JobStatus, TranscriptionConfig

from speech import wer


def test_async_client_seed_example(idle_server, speech):
    """The seed's example: AsyncClient(url=.../v2, api_key=...).transcribe(parallel_engines=...)."""
    audio, reference = speech

    async def main():
        client = AsyncClient(url=f"{idle_server.url}/v2", api_key="x")
        try:
            result = await client.transcribe(str(audio), parallel_engines=1, user_id="MY_USER_ID")
            jobs = await client.list_jobs(limit=5)
            return result, jobs
        finally:
            await client.close()

    result, jobs = asyncio.run(main())
    assert wer(reference, result.transcript_text) <= 0.1, result.transcript_text
    assert result.job.data_name == audio.name
    assert {j.id: j.status for j in jobs}[result.job.id] == JobStatus.DONE


def test_async_client_every_call(idle_server, speech):
    audio, reference = speech

    async def main():
        async with AsyncClient(url=f"{idle_server.url}/v2", api_key="x") as client:
            job = await client.submit_job(
                str(audio), transcription_config=TranscriptionConfig(language="en", model="standard")
            )
            info = await client.get_job_info(job.id)
            assert info.id == job.id and info.status in (JobStatus.RUNNING, JobStatus.DONE)
            result = await client.wait_for_completion(job.id)
            txt = await client.get_transcript(job.id, format_type=FormatType.TXT)
            srt = await client.get_transcript(job.id, format_type=FormatType.SRT)
            listed = await client.list_jobs(limit=100)
            await client.delete_job(job.id)
            deleted = await client.get_job_info(job.id)
            return job, result, txt, srt, listed, deleted

    job, result, txt, srt, listed, deleted = asyncio.run(main())
    assert wer(reference, result.transcript_text) <= 0.1
    assert wer(reference, txt) <= 0.1
    assert srt.startswith("1\n00:00:0")
    assert job.id in [j.id for j in listed]
    assert deleted.status == JobStatus.DELETED


def test_sync_client_every_call(idle_server, speech):
    audio, reference = speech
    with Client(url=f"{idle_server.url}/v2", api_key="any-key") as client:
        result = client.transcribe(str(audio), parallel_engines=2)  # the SDK default: enhanced
        assert wer(reference, result.transcript_text) <= 0.1, result.transcript_text
        job = client.submit_job(str(audio))
        assert client.get_job_info(job.id).id == job.id
        client.wait_for_completion(job.id)
        assert wer(reference, client.get_transcript(job.id, format_type=FormatType.TXT)) <= 0.1
        srt = client.get_transcript(job.id, format_type=FormatType.SRT)
        assert " --> " in srt
        transcript = client.get_transcript(job.id)
        assert transcript.metadata.language_pack_info["word_delimiter"] == " "
        assert [j.id for j in client.list_jobs(limit=2)][:1] == [job.id]
        client.delete_job(job.id)
        assert client.get_job_info(job.id).status == JobStatus.DELETED


def test_client_reads_jobs_that_others_submitted_with_extra_keys(idle_server, speech):
    """curl or the JS SDK may send keys the Python client does not know; the echo must not
    break its get_job_info/list_jobs (api-reference §5.2)."""
    audio, _ = speech
    config = {"type": "transcription", "fetch_text": {"url": "x"}, "notification_config": None,
              "tracking": {"title": "t", "details": {"customer": 7}},
              "transcription_config": {"language": "en", "model": "standard", "operating_point": "standard",
                                       "unheard_of": 1, "audio_filtering_config": {"volume_threshold": 0, "x": 1}}}
    job_id = idle_server.submit(audio, config).json()["id"]
    assert idle_server.wait(job_id)["status"] == "done"
    echoed = idle_server.http.get(f"/v2/jobs/{job_id}").json()["job"]["config"]
    assert echoed == {"type": "transcription", "fetch_text": {"url": "x"}, "tracking": {"title": "t"},
                      "transcription_config": {"language": "en", "model": "standard",
                                               "audio_filtering_config": {"volume_threshold": 0}}}
    with Client(url=f"{idle_server.url}/v2", api_key="x") as client:
        assert client.get_job_info(job_id).status == JobStatus.DONE
        assert job_id in [j.id for j in client.list_jobs(limit=100)]


def test_client_sends_transcription_options_and_reads_them_back(idle_server, speech):
    """The client's own option classes on the wire, and everything the job adds read back."""
    from speechmatics.batch import (
        AudioFilteringConfig,
        JobConfig,
        JobType,
        SummarizationConfig,
        TranscriptFilteringConfig,
        TranslationConfig,
    )

    audio, _ = speech  # "Please enter your password followed by the pound key."
    config = JobConfig(
        type=JobType.TRANSCRIPTION,
        transcription_config=TranscriptionConfig(
            language="en", model="standard", output_locale="en-GB",
            additional_vocab=[{"content": "pound key"}], punctuation_overrides={"permitted_marks": ["."]},
            transcript_filtering_config=TranscriptFilteringConfig(
                replacements=[{"from": "/^password$/", "to": "passphrase"}]),
            audio_filtering_config=AudioFilteringConfig(volume_threshold=0)),
        translation_config=TranslationConfig(target_languages=["en", "fr"]),
        summarization_config=SummarizationConfig(summary_length="brief"),
    )
    with Client(url=f"{idle_server.url}/v2", api_key="x") as client:
        job = client.submit_job(str(audio), config=config)
        result = client.wait_for_completion(job.id)
        info = client.get_job_info(job.id)
        listed = client.list_jobs(limit=100)
    assert "passphrase" in result.transcript_text and "password" not in result.transcript_text
    assert "," not in result.transcript_text
    assert result.translations["en"][0]["content"].lower().startswith("please enter your passphrase")
    assert [e["type"] for e in result.metadata.translation_errors] == ["unsupported_target_language"]
    assert result.metadata.summarization_errors[0]["type"] == "unsupported_feature"
    assert info.config.translation_config.target_languages == ["en", "fr"]
    assert job.id in [j.id for j in listed]
