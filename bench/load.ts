/**
 * The load generator, apart from the sandbox: one worker thread runs the real
 * webhook receivers, which verify every signature with the `standardwebhooks`
 * package, and each publishing task runs on a thread of its own (a flood in a
 * process of its own, see flood.ts), through the HTTP API. So a flood's requests
 * never delay the receivers' clocks or a calm producer's. Latency is from the
 * moment the API accepted an event (its 202 arrived) to the moment a receiver got it:
 * an event fanned out to several webhooks has arrived when the last of them got it,
 * so a delivery lost to one webhook is not hidden by another's.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import { Webhook } from 'standardwebhooks';
import { FLOOD_PRIORITY_ENV, FLOOD_TASK_ENV } from './flood.ts';

export interface PublishTask {
  readonly label: string;
  readonly apiUrl: string;
  readonly key: string;
  /** Resources to cycle through; each event names `parent` too. */
  readonly resources: readonly string[];
  readonly parent: string;
  readonly eventsPerRequest: number;
  /** Requests per second, or 0 for as fast as answers come back. */
  readonly requestsPerSecond: number;
  readonly concurrency: number;
  readonly durationMs: number;
  /** A flood: it runs in a process of its own at the lowest CPU priority (see `floodCommand`). */
  readonly flood?: boolean;
}

export type WorkerCommand =
  | { readonly cmd: 'secrets'; readonly secrets: Record<string, string> }
  | { readonly cmd: 'answer'; readonly path: string; readonly answer: number | 'hang' }
  | {
      readonly cmd: 'accepted';
      readonly label: string;
      readonly events: ReadonlyArray<readonly [string, number]>;
      /** The webhooks the label's events are delivered to: each must receive every one of them. */
      readonly webhooks: readonly string[];
    }
  | { readonly cmd: 'report' };

/** What a publishing thread answers when its task is done: its counts and every accepted event's id and time. */
export interface TaskResult {
  readonly stats: TaskStats;
  readonly accepted: Array<[string, number]>;
}

export interface TaskStats {
  readonly label: string;
  readonly requests: number;
  readonly accepted: number;
  /** Events the API refused: 429s, and events a 202 answered rejected for a reason (rate_limited, queue_full). */
  readonly rejected: number;
  /** Events of requests that failed (an error answer, a 5xx say, or none at all), and events a 202 answered not stored (internal). Not rejections: no limit refused them. */
  readonly failed: number;
  readonly status429: number;
  /** When it sent its first request and had its last answer: the time it loaded the API (a thread or process starts a while after it is asked for). */
  readonly startedAt: number;
  readonly endedAt: number;
  /** The CPU priority the task ran at (see `floodCommand`). */
  readonly priority: 'normal' | 'idle' | 'nice 19';
  /** A flood's process: the CPU it used, all its threads. */
  readonly cpuSeconds?: number;
}

export interface Report {
  /** Per accepted event: label, acceptance time, arrival at the last of its webhooks (or null while one has not got it). */
  readonly events: Array<{ id: string; label: string; acceptedAt: number; receivedAt: number | null }>;
  readonly arrivals: Record<string, number>;
  readonly badSignatures: number;
}

const floodTask = process.env[FLOOD_TASK_ENV];
if (!parentPort && !floodTask) throw new Error('bench/load.ts runs as a worker thread, or as a flood process (flood.ts)');
/** The bench's end of this worker (a flood process answers through process.send instead). */
function parentEnd() {
  if (!parentPort) throw new Error('a worker thread only');
  return parentPort;
}
const role = (floodTask ? { role: 'publisher', task: JSON.parse(floodTask) } : workerData) as
  | { role?: 'receivers' | 'publisher'; task?: PublishTask }
  | undefined;

const secrets = new Map<string, string>();
const answers = new Map<string, number | 'hang'>();
const accepted = new Map<string, { label: string; acceptedAt: number; webhooks: readonly string[] }>();
/** Per event, per webhook: its first arrival that the endpoint answered 2xx. */
const received = new Map<string, Map<string, number>>();
const arrivals: Record<string, number> = {};
let badSignatures = 0;

function serveReceivers(): void {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      arrivals[path] = (arrivals[path] ?? 0) + 1;
      const answer = answers.get(path) ?? 200;
      if (answer === 'hang') return;
      const body = Buffer.concat(chunks).toString('utf8');
      const now = Date.now();
      try {
        const parsed = JSON.parse(body) as { webhook: string; events: Array<{ id: string }> };
        const secret = secrets.get(parsed.webhook);
        if (secret) {
          new Webhook(secret).verify(body, req.headers as Record<string, string>);
          if (answer >= 200 && answer < 300) {
            for (const e of parsed.events) {
              const byWebhook = received.get(e.id) ?? new Map<string, number>();
              if (!byWebhook.has(parsed.webhook)) byWebhook.set(parsed.webhook, now);
              received.set(e.id, byWebhook);
            }
          }
        }
      } catch {
        badSignatures++;
      }
      res.writeHead(answer).end();
    });
  });
  server.listen(0, '127.0.0.1', () => {
    parentEnd().postMessage({ cmd: 'ready', url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
  });
}

async function runTask(task: PublishTask, priority: TaskStats['priority']): Promise<TaskResult> {
  const acceptedHere: Array<[string, number]> = [];
  // One clock reading for both: a deadline read a millisecond before `started` ended the
  // task before `started + durationMs`, and its stats said it sent for less than it was asked.
  const started = Date.now();
  const deadline = started + task.durationMs;
  let requests = 0;
  let ok = 0;
  let rejected = 0;
  let failed = 0;
  let status429 = 0;
  let next = 0;
  const interval = task.requestsPerSecond > 0 ? 1000 / task.requestsPerSecond : 0;
  const worker = async () => {
    while (Date.now() < deadline) {
      const n = requests++;
      if (interval > 0) {
        // Read the clock once: `due` is fractional, so a second read a millisecond later
        // could make the wait negative (Node warns and waits 1 ms).
        const wait = started + n * interval - Date.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        if (Date.now() >= deadline) return;
      }
      const events = Array.from({ length: task.eventsPerRequest }, () => {
        const resource = task.resources[next++ % task.resources.length] as string;
        return { resource, parents: [task.parent], type: 'bench.tick', data: { n } };
      });
      try {
        const response = await fetch(`${task.apiUrl}/v1/events`, {
          method: 'POST',
          headers: { authorization: `Bearer ${task.key}`, 'content-type': 'application/json' },
          body: JSON.stringify({ events }),
        });
        const at = Date.now();
        const body = (await response.json()) as { events?: Array<{ id?: string; status: string; error?: { code?: string } }> };
        if (response.status === 429) status429++;
        for (const e of body.events ?? []) {
          if (e.status === 'accepted' && e.id) {
            acceptedHere.push([e.id, at]);
            ok++;
          } else if (e.status === 'rejected' && e.error?.code === 'internal') {
            // Not stored (internal): the storage failing, which a 202 answers per event when
            // others of the request were stored. A rejection would pass it for throttling.
            failed++;
          } else rejected++;
        }
        // A request refused as a whole (the tenant's API throttle) has no per-event results;
        // any other answer without them is the API failing, which a rejection would hide.
        if (!body.events) {
          if (response.status === 429) rejected += task.eventsPerRequest;
          else failed += task.eventsPerRequest;
        }
      } catch {
        failed += task.eventsPerRequest;
      }
    }
  };
  await Promise.all(Array.from({ length: task.concurrency }, worker));
  const endedAt = Date.now();
  return {
    stats: { label: task.label, requests, accepted: ok, rejected, failed, status429, startedAt: started, endedAt, priority },
    accepted: acceptedHere,
  };
}

/** When the last of `webhooks` got `event`; null while one has not (or when it goes to none: a bench mistake, shown as lost). */
function arrivedAt(event: string, webhooks: readonly string[]): number | null {
  const byWebhook = received.get(event);
  if (!byWebhook || webhooks.length === 0) return null;
  let last = 0;
  for (const webhook of webhooks) {
    const at = byWebhook.get(webhook);
    if (at === undefined) return null;
    last = Math.max(last, at);
  }
  return last;
}

// Every command carries an id that its reply repeats: runs overlap, so replies come in any order.
function answerCommands(): void {
  const port = parentEnd();
  port.on('message', async ({ id, command }: { id: number; command: WorkerCommand }) => {
    const reply = (body: Record<string, unknown>) => port.postMessage({ id, ...body });
    switch (command.cmd) {
      case 'secrets':
        for (const [webhook, secret] of Object.entries(command.secrets)) secrets.set(webhook, secret);
        reply({ cmd: 'ok' });
        break;
      case 'answer':
        answers.set(command.path, command.answer);
        reply({ cmd: 'ok' });
        break;
      case 'accepted':
        for (const [event, acceptedAt] of command.events)
          accepted.set(event, { label: command.label, acceptedAt, webhooks: command.webhooks });
        reply({ cmd: 'ok' });
        break;
      case 'report': {
        const report: Report = {
          events: [...accepted].map(([event, a]) => ({
            id: event,
            label: a.label,
            acceptedAt: a.acceptedAt,
            receivedAt: arrivedAt(event, a.webhooks),
          })),
          arrivals: { ...arrivals },
          badSignatures,
        };
        reply({ cmd: 'report', report });
        break;
      }
    }
  });
}

if (role?.role === 'publisher' && role.task && floodTask) {
  // A flood's process tells its own CPU (a thread's is in the bench's thread figures).
  const cpuBefore = process.cpuUsage();
  const result = await runTask(role.task, (process.env[FLOOD_PRIORITY_ENV] as TaskStats['priority'] | undefined) ?? 'normal');
  const cpu = process.cpuUsage(cpuBefore);
  // Its open connections would keep the process alive: it ends once its answer is sent.
  process.send?.({ ...result, stats: { ...result.stats, cpuSeconds: (cpu.user + cpu.system) / 1e6 } }, () => process.exit(0));
} else if (role?.role === 'publisher' && role.task) {
  parentEnd().postMessage(await runTask(role.task, 'normal'));
} else {
  serveReceivers();
  answerCommands();
}
