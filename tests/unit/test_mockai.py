"""mockai's chat and text completions, driven with the official openai client."""

from __future__ import annotations

import httpx
import openai

from tests.unit.mockai_client import SKY_ANSWER, collect_chat_stream, system, user

CAPITAL_QUESTION = "What is the capital of France?"
CAPITAL_ANSWER = "You asked about capital, france. This is a deterministic mock answer from mockai."
LONG_PASSAGE = (
    "Rayleigh scattering is the elastic scattering of light by particles much smaller than the "
    "wavelength of the radiation, and it is stronger for shorter wavelengths such as blue."
)


async def test_chat_answers_with_an_openai_shaped_completion(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="mock-gpt", messages=[user(CAPITAL_QUESTION)]
    )

    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "mock-gpt"
    assert completion.created > 0
    [choice] = completion.choices
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == CAPITAL_ANSWER
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 6  # words in the question
    assert completion.usage.completion_tokens == 13  # words in the answer
    assert completion.usage.total_tokens == 19


async def test_chat_answer_depends_only_on_the_messages(client: openai.AsyncOpenAI) -> None:
    first = await client.chat.completions.create(
        model="mock-gpt", messages=[user(CAPITAL_QUESTION)], temperature=1.5
    )
    second = await client.chat.completions.create(
        model="another-model", messages=[user(CAPITAL_QUESTION)], temperature=0
    )

    assert first.choices[0].message.content == second.choices[0].message.content
    assert second.model == "another-model"


async def test_sky_question_is_answered_blue(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="mock-gpt", messages=[user("Why is the SKY that colour?")]
    )

    assert completion.choices[0].message.content == SKY_ANSWER


async def test_answer_quotes_the_first_numbered_context_passage(
    client: openai.AsyncOpenAI,
) -> None:
    context = f"Answer from the context.\nContext:\n[1] {LONG_PASSAGE}\n[2] Sunsets look red."
    completion = await client.chat.completions.create(
        model="mock-gpt", messages=[system(context), user("Why is the sky blue?")]
    )

    first_20_words = " ".join(LONG_PASSAGE.split()[:20])
    assert completion.choices[0].message.content == (
        f'{SKY_ANSWER} According to [1]: "{first_20_words}..." See also [2].'
    )


async def test_unnumbered_context_lines_are_cited_by_position(client: openai.AsyncOpenAI) -> None:
    message = (
        "Sources:\n"
        "- The Eiffel Tower is 330 metres tall.\n"
        "\n"
        "Question: How tall is the Eiffel Tower?"
    )
    completion = await client.chat.completions.create(model="mock-gpt", messages=[user(message)])

    assert completion.choices[0].message.content == (
        'According to [1]: "The Eiffel Tower is 330 metres tall."'
    )


async def test_numbered_passages_keep_their_labels_and_answers_stay_short(
    client: openai.AsyncOpenAI,
) -> None:
    long_question = "Why is the sky blue? " + " ".join(f"detail{i}" for i in range(200))
    message = f"[3] {LONG_PASSAGE}\n[7] Sunsets look red.\n{long_question}"
    completion = await client.chat.completions.create(model="mock-gpt", messages=[user(message)])

    content = completion.choices[0].message.content
    assert content is not None
    assert content.startswith(f'{SKY_ANSWER} According to [3]: "Rayleigh scattering is the')
    assert content.endswith("See also [7].")
    assert len(content.split()) < 80


async def test_streamed_chat_sends_the_plain_answer_word_by_word(
    client: openai.AsyncOpenAI,
) -> None:
    plain = await client.chat.completions.create(
        model="mock-gpt", messages=[user(CAPITAL_QUESTION)]
    )
    chunks = await collect_chat_stream(
        client, [user(CAPITAL_QUESTION)], stream_options={"include_usage": True}
    )

    first, *content_chunks, last, usage_chunk = chunks
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content is None
    deltas = [chunk.choices[0].delta.content for chunk in content_chunks]
    assert deltas[:4] == ["You ", "asked ", "about ", "capital, "]
    assert "".join(d or "" for d in deltas) == plain.choices[0].message.content
    assert all(chunk.choices[0].finish_reason is None for chunk in content_chunks)
    assert last.choices[0].finish_reason == "stop"
    assert last.choices[0].delta.content is None
    assert usage_chunk.choices == []
    assert usage_chunk.usage == plain.usage
    assert {chunk.id for chunk in chunks} == {chunks[0].id}
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)


async def test_streamed_chat_without_usage_ends_with_the_finish_chunk(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    chunks = await collect_chat_stream(client, [user("Why is the sky blue?")])

    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == SKY_ANSWER

    raw = await http.post(
        "/v1/chat/completions",
        json={"model": "mock-gpt", "stream": True, "messages": [user("Why is the sky blue?")]},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.endswith("data: [DONE]\n\n")
    events = raw.text.split("\n\n")[:-1]
    assert all(event.startswith("data: ") for event in events)
    assert len(events) == len(SKY_ANSWER.split()) + 3  # role, words, finish, [DONE]


async def test_max_tokens_cuts_the_answer_with_finish_reason_length(
    client: openai.AsyncOpenAI,
) -> None:
    plain = await client.chat.completions.create(
        model="mock-gpt", messages=[user(CAPITAL_QUESTION)], max_tokens=3
    )
    chunks = await collect_chat_stream(client, [user(CAPITAL_QUESTION)], max_tokens=3)

    assert plain.choices[0].message.content == "You asked about"
    assert plain.choices[0].finish_reason == "length"
    assert plain.usage is not None
    assert plain.usage.completion_tokens == 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "You asked about"
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_n_gives_that_many_identical_choices(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="mock-gpt", messages=[user("Why is the sky blue?")], n=2
    )

    assert [choice.index for choice in completion.choices] == [0, 1]
    assert [choice.message.content for choice in completion.choices] == [SKY_ANSWER] * 2
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 2 * len(SKY_ANSWER.split())


async def test_unknown_openai_parameters_are_accepted(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="mock-gpt",
        messages=[
            system("Be brief."),
            user(CAPITAL_QUESTION),
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": [{"type": "text", "text": "Why is the sky blue?"}]},
        ],
        top_p=0.5,
        user="someone",
        seed=7,
        presence_penalty=0.1,
        extra_body={"a_parameter_from_the_future": {"x": 1}},
    )

    assert completion.choices[0].message.content == SKY_ANSWER


async def test_completion_answers_each_prompt(client: openai.AsyncOpenAI) -> None:
    completion = await client.completions.create(
        model="mock-gpt", prompt=["Why is the sky blue?", CAPITAL_QUESTION]
    )

    assert completion.id.startswith("cmpl-")
    assert completion.object == "text_completion"
    assert [choice.index for choice in completion.choices] == [0, 1]
    assert [choice.text for choice in completion.choices] == [SKY_ANSWER, CAPITAL_ANSWER]
    assert [choice.finish_reason for choice in completion.choices] == ["stop", "stop"]
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 5 + 6
    assert completion.usage.completion_tokens == 8 + 13


async def test_streamed_completion_equals_the_plain_one(client: openai.AsyncOpenAI) -> None:
    plain = await client.completions.create(model="mock-gpt", prompt="Why is the sky blue?")
    stream = await client.completions.create(
        model="mock-gpt",
        prompt="Why is the sky blue?",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    *text_chunks, last, usage_chunk = chunks
    assert [chunk.choices[0].text for chunk in text_chunks] == [
        "The ", "sky ", "is ", "blue ", "because ", "of ", "Rayleigh ", "scattering."
    ]  # fmt: skip
    assert "".join(chunk.choices[0].text for chunk in text_chunks) == plain.choices[0].text
    assert last.choices[0].finish_reason == "stop"
    assert last.choices[0].text == ""
    assert usage_chunk.usage == plain.usage
