// The official OpenAI JavaScript SDK as a new user would call it (the script), against a RecurFormer server
// given by RECURFORMER_URL / RECURFORMER_API_KEY / RECURFORMER_MODEL. Run by JavaScriptSdkTests; by hand:
//   npm ci && RECURFORMER_URL=http://127.0.0.1:8000/v1 RECURFORMER_API_KEY=x RECURFORMER_MODEL=dotnet-docs-qwen2-16m npm test
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { zodFunction, zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';

const client = new OpenAI({ baseURL: process.env.RECURFORMER_URL, apiKey: process.env.RECURFORMER_API_KEY });
const model = process.env.RECURFORMER_MODEL;
const messages = [
  { role: 'system', content: 'You are a concise assistant that explains .NET APIs.' },
  { role: 'user', content: 'Describe System.String.Trim.' },
];

// Bounded strings: the demo model writes documentation prose and would fill an unbounded one until max_tokens.
const Member = z.object({
  name: z.string().max(40),
  kind: z.enum(['class', 'struct', 'method', 'property']),
  isStatic: z.boolean(),
  overloads: z.number().int().min(0).max(10),
});

const GetWeather = z.object({ city: z.string().max(24), unit: z.enum(['celsius', 'fahrenheit']) });
const tools = [zodFunction({ name: 'get_weather', description: 'The current weather in a city', parameters: GetWeather })];
const question = [{ role: 'user', content: 'What is the weather in Paris?' }];

test('chat.completions.parse with a zod schema', async () => {
  const completion = await client.chat.completions.parse({ model, messages, response_format: zodResponseFormat(Member, 'member'), max_tokens: 150, temperature: 0 });
  const parsed = completion.choices[0].message.parsed;
  assert.ok(parsed, completion.choices[0].message.content);
  assert.deepEqual(Member.parse(parsed), parsed);
});

test('response_format json_object', async () => {
  const completion = await client.chat.completions.create({ model, messages, response_format: { type: 'json_object' }, max_tokens: 100, temperature: 0 });
  const value = JSON.parse(completion.choices[0].message.content);
  assert.equal(typeof value, 'object');
  assert.ok(value !== null && !Array.isArray(value));
});

for (const [name, tool_choice] of [['required', 'required'], ['named', { type: 'function', function: { name: 'get_weather' } }]]) {
  test(`tools with tool_choice ${name}, parsed`, async () => {
    const completion = await client.chat.completions.parse({ model, messages: question, tools, tool_choice, parallel_tool_calls: false, max_tokens: 120, temperature: 0 });
    const choice = completion.choices[0];
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.equal(choice.message.tool_calls.length, 1);
    const call = choice.message.tool_calls[0];
    assert.equal(call.function.name, 'get_weather');
    assert.deepEqual(GetWeather.parse(call.function.parsed_arguments), call.function.parsed_arguments);
  });

  test(`tools with tool_choice ${name}, streamed`, async () => {
    const stream = client.chat.completions.stream({ model, messages: question, tools, tool_choice, max_tokens: 120, temperature: 0 });
    let deltas = 0;
    for await (const chunk of stream) {
      deltas += chunk.choices[0]?.delta?.tool_calls?.length ?? 0;
    }
    const completion = await stream.finalChatCompletion();
    const call = completion.choices[0].message.tool_calls[0];
    assert.ok(deltas > 1, `${deltas} tool-call delta(s)`);
    assert.equal(completion.choices[0].finish_reason, 'tool_calls');
    GetWeather.parse(JSON.parse(call.function.arguments));
  });
}

test('tools with tool_choice auto: the demo model answers in text', async () => {
  const completion = await client.chat.completions.create({ model, messages, tools, tool_choice: 'auto', max_tokens: 60, temperature: 0 });
  const message = completion.choices[0].message;
  assert.ok(!message.tool_calls || message.tool_calls.length === 0);
  assert.ok(message.content.length > 0);
});

test('completions with echo and logprobs (lm-evaluation-harness loglikelihood)', async () => {
  const prompt = 'Determines whether the current System.Threading.CancellationToken';
  const completion = await client.completions.create({ model, prompt, echo: true, logprobs: 1, max_tokens: 1, temperature: 0 });
  const choice = completion.choices[0];
  assert.ok(choice.text.startsWith(prompt));
  const logprobs = choice.logprobs.token_logprobs;
  assert.equal(logprobs[0], null);
  assert.ok(logprobs.slice(1).every((l) => typeof l === 'number' && l <= 0));
  assert.equal(choice.logprobs.tokens.slice(0, -1).join(''), prompt);
});
