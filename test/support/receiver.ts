/**
 * A real HTTP webhook receiver on a loopback port. It records every request and
 * answers as told; `verify` checks a delivery with the `standardwebhooks` package.
 */
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';

export interface ReceivedDelivery {
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: string;
  readonly json: { webhook: string; events: Array<Record<string, unknown> & { id: string; seq: number; type: string; resource: string }> };
  readonly at: number;
  /** The status the receiver answered with. */
  readonly answered: number;
}

/**
 * How to answer a request: a status (with headers), or 'hang' to never answer.
 * `pings: 200` answers webhook.ping probes apart (an endpoint that refuses only some deliveries).
 */
export type Answer =
  | number
  | 'hang'
  | { readonly status: number; readonly headers?: Record<string, string>; readonly pings?: number }
  | AnswerFunction;

/** Decides the status once the request is read, and may act first (e.g. call the API while the delivery waits for its answer). */
export type AnswerFunction = (request: { readonly path: string; readonly ping: boolean }) => Promise<number>;

export interface Receiver {
  readonly url: string;
  readonly received: ReceivedDelivery[];
  /** Sets the answer for requests whose path starts with `prefix`. */
  answer(prefix: string, answer: Answer): void;
  /** Probes of a quarantined endpoint that reached a path. */
  probes(path: string): ReceivedDelivery[];
  /** Deliveries to a path, excluding webhook.ping verifications and probes. */
  deliveries(path: string): ReceivedDelivery[];
  /** Requests to a path that were answered 2xx (pings included). */
  accepted(path: string): ReceivedDelivery[];
  /** Events of the deliveries to a path that were answered 2xx (pings excluded), in arrival order. */
  acceptedEvents(path: string): ReceivedDelivery['json']['events'];
  /** Every event delivered to a path, in arrival order. */
  events(path: string): ReceivedDelivery['json']['events'];
  waitFor(predicate: () => boolean, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

export async function startReceiver(): Promise<Receiver> {
  const received: ReceivedDelivery[] = [];
  const answers = new Map<string, Answer>();
  const hanging = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', async () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const path = req.url ?? '/';
      let answer: Answer = 200;
      for (const [prefix, a] of answers) if (path.startsWith(prefix)) answer = a;
      if (answer !== 'hang') {
        let json: ReceivedDelivery['json'];
        try {
          json = JSON.parse(body);
        } catch {
          json = { webhook: '', events: [] };
        }
        const ping = json.events?.some((e) => e.type === 'webhook.ping') ?? false;
        if (typeof answer === 'function') answer = await answer({ path, ping });
        const answered = typeof answer === 'number' ? answer : ping && answer.pings !== undefined ? answer.pings : answer.status;
        received.push({ path, headers: req.headers as Record<string, string>, body, json, at: Date.now(), answered });
        res.writeHead(answered, typeof answer === 'number' ? undefined : answer.headers).end();
      } else {
        hanging.add(res);
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  const isPing = (d: ReceivedDelivery) => d.json.events.some((e) => e.type === 'webhook.ping');
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    answer: (prefix, answer) => answers.set(prefix, answer),
    probes: (path) =>
      received.filter(
        (d) => d.path === path && d.json.events.some((e) => e.type === 'webhook.ping' && (e.data as { probe?: boolean })?.probe === true),
      ),
    deliveries: (path) => received.filter((d) => d.path === path && !isPing(d)),
    accepted: (path) => received.filter((d) => d.path === path && d.answered >= 200 && d.answered < 300),
    acceptedEvents: (path) =>
      received.filter((d) => d.path === path && d.answered >= 200 && d.answered < 300 && !isPing(d)).flatMap((d) => d.json.events),
    events: (path) => received.filter((d) => d.path === path && !isPing(d)).flatMap((d) => d.json.events),
    async waitFor(predicate, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (!predicate()) {
        if (Date.now() > deadline) throw new Error('Timed out waiting for deliveries');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
    async close() {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Verifies a delivery's signature with the Standard Webhooks reference library; throws if invalid. */
export function verifyDelivery(secret: string, delivery: ReceivedDelivery): unknown {
  return new Webhook(secret).verify(delivery.body, {
    'webhook-id': delivery.headers['webhook-id'] as string,
    'webhook-timestamp': delivery.headers['webhook-timestamp'] as string,
    'webhook-signature': delivery.headers['webhook-signature'] as string,
  });
}
