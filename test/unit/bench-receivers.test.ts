import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Report, WorkerCommand } from '../../bench/load.ts';
import { PendingAnswers } from '../../sandbox/threads.ts';

// The bench's receivers, on their worker thread as the bench runs them, over real HTTP.
let worker: Worker;
let url = '';
const replies = new PendingAnswers<Record<string, unknown>>();
const ask = (command: WorkerCommand) => replies.ask((id) => worker.postMessage({ id, command }));
const report = async () => (await ask({ cmd: 'report' })).report as Report;

beforeAll(async () => {
  worker = new Worker(new URL('../../bench/load.ts', import.meta.url), { workerData: { role: 'receivers' } });
  await new Promise<void>((resolve) => {
    worker.on('message', (message: { cmd: string; url?: string; id?: number }) => {
      if (message.cmd === 'ready') {
        url = message.url as string;
        resolve();
      } else replies.answer(message.id as number, message);
    });
  });
});

afterAll(async () => {
  await worker.terminate();
});

const secret = () => `whsec_${randomBytes(24).toString('base64')}`;

/** A signed delivery of `events` from `webhook`, as sluice POSTs it. */
async function deliver(path: string, webhook: string, key: string, events: string[]): Promise<number> {
  const body = JSON.stringify({ webhook, events: events.map((id) => ({ id, seq: 1, type: 'bench.tick' })) });
  const id = `msg_${randomBytes(8).toString('hex')}`;
  const at = new Date();
  const response = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'webhook-id': id,
      'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
      'webhook-signature': new Webhook(key).sign(id, at, body),
    },
    body,
  });
  return response.status;
}

describe('the benchmark receivers', () => {
  it('count an event fanned out to several webhooks as arrived only once every one of them got it', async () => {
    const [a, b] = [secret(), secret()];
    await ask({ cmd: 'secrets', secrets: { wh_fan_a: a, wh_fan_b: b } });
    const acceptedAt = Date.now();
    await ask({ cmd: 'accepted', label: 'fan', events: [['evt_fan', acceptedAt]], webhooks: ['wh_fan_a', 'wh_fan_b'] });

    expect(await deliver('/fan-a', 'wh_fan_a', a, ['evt_fan'])).toBe(200);
    const half = (await report()).events.find((e) => e.id === 'evt_fan');
    expect(await deliver('/fan-b', 'wh_fan_b', b, ['evt_fan'])).toBe(200);
    const whole = (await report()).events.find((e) => e.id === 'evt_fan');

    // Delivered to one of its two webhooks: not yet arrived, so lost if the other never gets it.
    expect(half?.receivedAt).toBeNull();
    expect(whole?.receivedAt).toBeGreaterThanOrEqual(acceptedAt);
  });

  it('do not count a delivery their endpoint refused, or one from a webhook the event does not go to', async () => {
    const [mine, other] = [secret(), secret()];
    await ask({ cmd: 'secrets', secrets: { wh_one: mine, wh_other: other } });
    await ask({ cmd: 'answer', path: '/one-failing', answer: 500 });
    await ask({ cmd: 'accepted', label: 'one', events: [['evt_one', Date.now()]], webhooks: ['wh_one'] });

    expect(await deliver('/one-failing', 'wh_one', mine, ['evt_one'])).toBe(500);
    expect(await deliver('/other', 'wh_other', other, ['evt_one'])).toBe(200);

    expect((await report()).events.find((e) => e.id === 'evt_one')?.receivedAt).toBeNull();
    expect(await deliver('/one', 'wh_one', mine, ['evt_one'])).toBe(200);
    expect((await report()).events.find((e) => e.id === 'evt_one')?.receivedAt).not.toBeNull();
  });
});
