/**
 * A model-based property of the pull API, `GET /v1/events?resource=…&sync=…` (README
 * *Event streams (pull)*, *What a subscriber receives*), through the sandbox's HTTP API.
 *
 * Each run makes two tenants with the same resource tree (`task:1` and `task:2` under
 * `project:1`, and `doc:1`), starts streams on `project:1` and `task:1` (a first poll,
 * answered 412 with a token) and puts a webhook on each of the same resources. Then
 * random steps, after two batches of large events that a page cannot hold together:
 * batches published (some of events near the 64 KiB `data` limit, so that
 * a page ends at its size rather than at 100 events), a consumer paging on from its
 * token (calling again at once while `has_more`), and polls with a token of another
 * resource, of another tenant or changed by a character. Once all is quiet (every
 * webhook has its events, and a page stops 3 s short of now), it checks:
 *
 * - paging from a stream's first token to `has_more: false` gives every event of its
 *   tenant on its resource or naming it as a parent, each at least once, and nothing
 *   else; a copy is the same object (same `id` and `seq`);
 * - paging on from any token handed out along the way gives again everything not yet
 *   read by then (a token stays valid: at least once);
 * - a page holds at most 100 events;
 * - each event is the object a webhook on the same resource got (same fields, `seq`);
 * - the stream's own resource's `seq`s are 1..n;
 * - a token of another resource or tenant, or a changed one, is answered 412 with a fresh
 *   token and never another stream's events.
 */
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { publishOnTree, RESOURCES, reaches } from '../support/resource-tree.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox({ canary: false, logLevel: 'ERROR' }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

const STREAMED = ['project:1', 'task:1'] as const;
/** A page stops 3 s short of now (README): a little more, for the sandbox's threads. */
const PAGE_LAG_MS = 3_500;

type Step =
  | { readonly kind: 'publish'; readonly tenant: number; readonly resource: string; readonly count: number; readonly large: boolean }
  | { readonly kind: 'page'; readonly tenant: number; readonly stream: number }
  | { readonly kind: 'foreign'; readonly tenant: number; readonly stream: number; readonly how: 'resource' | 'tenant' | 'changed' }
  | { readonly kind: 'wait'; readonly ms: number };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('publish' as const),
      tenant: fc.nat(1),
      resource: fc.constantFrom(...RESOURCES),
      count: fc.integer({ min: 1, max: 15 }),
      large: fc.nat(2).map((n) => n === 0),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('page' as const), tenant: fc.nat(1), stream: fc.nat(STREAMED.length - 1) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('foreign' as const),
      tenant: fc.nat(1),
      stream: fc.nat(STREAMED.length - 1),
      how: fc.constantFrom('resource' as const, 'tenant' as const, 'changed' as const),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('wait' as const), ms: fc.integer({ min: 200, max: 4000 }) }) },
);

/**
 * Runs of the property: STREAMS_RUNS=30 to hunt for a failure for longer, STREAMS_SEED to
 * replay one, STREAMS_DEBUG=1 to print each page's size.
 */
const RUNS = Number(process.env.STREAMS_RUNS ?? 3);
const SEED = process.env.STREAMS_SEED === undefined ? undefined : Number(process.env.STREAMS_SEED);
let run = 0;

type StreamEvent = Record<string, unknown> & { id: string; seq: number; resource: string; type: string };
interface Stream {
  readonly tenant: number;
  readonly resource: string;
  readonly first: string;
  /** The token to page on from. */
  token: string;
  readonly read: Map<string, StreamEvent>;
  /** Every token handed out, with what had been read before it was. */
  readonly handedOut: Array<{ token: string; readBefore: Set<string> }>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const streamPath = (resource: string, sync?: string) =>
  `/v1/events?resource=${encodeURIComponent(resource)}${sync ? `&sync=${encodeURIComponent(sync)}` : ''}`;

/** Pages on from `sync` until `has_more` is false; answers the events in order, the last token, and any problem. */
async function pageOn(
  key: string,
  resource: string,
  sync: string,
  problems: string[],
): Promise<{ events: StreamEvent[]; tokens: string[] }> {
  const events: StreamEvent[] = [];
  const tokens: string[] = [];
  let token = sync;
  for (let pages = 0; pages < 1_000; pages++) {
    const answer = await call(sandbox, 'GET', streamPath(resource, token), { key });
    if (answer.status !== 200) {
      problems.push(`${resource}: a token handed out was answered ${answer.status} ${JSON.stringify(answer.body).slice(0, 300)}`);
      return { events, tokens };
    }
    const page = answer.body as { data: StreamEvent[]; sync: string; has_more: boolean };
    if (process.env.STREAMS_DEBUG)
      console.log(`page ${resource}: ${page.data.length} events, ${JSON.stringify(page).length} bytes, has_more ${page.has_more}`);
    if (page.data.length > 100) problems.push(`${resource}: a page of ${page.data.length} events`);
    events.push(...page.data);
    token = page.sync;
    tokens.push(token);
    if (!page.has_more) return { events, tokens };
  }
  problems.push(`${resource}: still has_more after 1,000 pages`);
  return { events, tokens };
}

describe('event streams, paged (model-based)', () => {
  it('every event of a stream is served at least once from any token handed out, as webhooks get it, and no other', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { minLength: 5, maxLength: 12 }), async (drawn) => {
        // Each run opens with more than a page's 1 MB of large events on one stream's
        // resource, so that its pages end at their size at least once.
        const opening: Step[] = [1, 1].map(() => ({ kind: 'publish', tenant: 0, resource: 'task:1', count: 12, large: true }));
        const steps = [...opening, ...drawn];
        run++;
        const problems: string[] = [];
        const tenants = [await createTenant(sandbox, `streams-a-${run}`), await createTenant(sandbox, `streams-b-${run}`)];
        const hookPath = (tenant: number, resource: string) => `/streams/${run}/${tenant}/${resource}`;
        const streams: Stream[] = [];
        for (const [tenant, { key }] of tenants.entries()) {
          for (const resource of STREAMED) {
            await createWebhook(sandbox, key, { resource, url: `${receiver.url}${hookPath(tenant, resource)}` });
            const started = await call(sandbox, 'GET', streamPath(resource), { key });
            expect(started.status, JSON.stringify(started.body)).toBe(412);
            const first = started.body.sync as string;
            streams.push({ tenant, resource, first, token: first, read: new Map(), handedOut: [{ token: first, readBefore: new Set() }] });
          }
        }
        const streamOf = (tenant: number, pick: number) => streams.filter((s) => s.tenant === tenant)[pick] as Stream;
        const accepted: Array<{ tenant: number; resource: string; id: string }> = [];
        const log: string[] = [];

        for (const step of steps) {
          if (step.kind === 'publish') {
            const ids = await publishOnTree(sandbox, tenants[step.tenant]?.key as string, step.resource, step.count, (n) =>
              step.large ? { n, pad: 'x'.repeat(60_000) } : { n },
            );
            for (const id of ids) accepted.push({ tenant: step.tenant, resource: step.resource, id });
            log.push(`publish t${step.tenant} ${step.resource} ×${step.count}${step.large ? ' (large)' : ''}`);
          } else if (step.kind === 'page') {
            const stream = streamOf(step.tenant, step.stream);
            const { events, tokens } = await pageOn(tenants[step.tenant]?.key as string, stream.resource, stream.token, problems);
            for (const event of events) {
              stream.read.set(event.id, event);
            }
            for (const token of tokens) stream.handedOut.push({ token, readBefore: new Set(stream.read.keys()) });
            stream.token = tokens.at(-1) ?? stream.token;
            log.push(`page t${step.tenant} ${stream.resource}: ${events.length} events`);
          } else if (step.kind === 'foreign') {
            const stream = streamOf(step.tenant, step.stream);
            const other = streamOf(step.tenant, 1 - step.stream);
            const [key, resource, token] =
              step.how === 'resource'
                ? [tenants[step.tenant]?.key, other.resource, stream.token]
                : step.how === 'tenant'
                  ? [tenants[1 - step.tenant]?.key, stream.resource, stream.token]
                  : [tenants[step.tenant]?.key, stream.resource, changed(stream.token)];
            const answer = await call(sandbox, 'GET', streamPath(resource, token), { key: key as string });
            if (answer.status !== 412 || typeof answer.body?.sync !== 'string' || answer.body.sync === token || 'data' in answer.body) {
              problems.push(
                `a token ${step.how === 'changed' ? 'changed by a character' : `of another ${step.how}`} was answered ${answer.status} ${JSON.stringify(answer.body).slice(0, 300)}`,
              );
            }
            log.push(`foreign token (${step.how}) on t${step.tenant} ${resource}`);
          } else {
            await sleep(step.ms);
            log.push(`wait ${step.ms} ms`);
          }
        }

        // Quiet: each webhook has every event it is owed, then a page's 3 s lag passes.
        const owed = (tenant: number, resource: string) =>
          accepted.filter((event) => event.tenant === tenant && reaches(event.resource, resource));
        const delivered = (tenant: number, resource: string) =>
          new Map(receiver.acceptedEvents(hookPath(tenant, resource)).map((event) => [event.id, event]));
        await receiver.waitFor(
          () =>
            streams.every((s) => {
              const got = delivered(s.tenant, s.resource);
              return owed(s.tenant, s.resource).every((e) => got.has(e.id));
            }),
          60_000,
        );
        await sleep(PAGE_LAG_MS);

        for (const stream of streams) {
          const key = tenants[stream.tenant]?.key as string;
          const want = owed(stream.tenant, stream.resource);
          const wantIds = new Set(want.map((event) => event.id));
          const byWebhook = delivered(stream.tenant, stream.resource);
          const label = `t${stream.tenant} ${stream.resource}`;
          for (const { token, readBefore } of stream.handedOut) {
            const { events } = await pageOn(key, stream.resource, token, problems);
            const served = new Map<string, StreamEvent>();
            for (const event of events) {
              const copy = served.get(event.id) ?? stream.read.get(event.id);
              if (copy && !isDeepStrictEqual(copy, event))
                problems.push(`${label}: ${event.id} served as two objects: ${JSON.stringify(copy)} and ${JSON.stringify(event)}`);
              served.set(event.id, event);
              if (!wantIds.has(event.id)) problems.push(`${label}: served ${JSON.stringify(event).slice(0, 300)}, which is not its`);
              const sent = byWebhook.get(event.id);
              if (sent && !isDeepStrictEqual(sent, event))
                problems.push(
                  `${label}: ${event.id} served as ${JSON.stringify(event).slice(0, 300)} but delivered as ${JSON.stringify(sent).slice(0, 300)}`,
                );
            }
            const missing = want.filter((event) => !served.has(event.id) && !readBefore.has(event.id));
            if (missing.length > 0)
              problems.push(
                `${label}: paging on from a token handed out after ${readBefore.size} events read misses ${missing.length} (${missing
                  .slice(0, 3)
                  .map((e) => e.id)
                  .join(', ')})`,
              );
            if (token === stream.first) {
              const own = [...served.values()]
                .filter((event) => event.resource === stream.resource)
                .map((event) => event.seq)
                .sort((a, b) => a - b);
              const ownCount = want.filter((event) => event.resource === stream.resource).length;
              if (JSON.stringify(own) !== JSON.stringify(Array.from({ length: ownCount }, (_, n) => n + 1)))
                problems.push(`${label}: its own seqs are ${own.join(',')}, not 1..${ownCount}`);
            }
          }
        }
        if (problems.length > 0)
          throw new Error(`run ${run}:\n  ${[...new Set(problems)].slice(0, 20).join('\n  ')}\nsteps:\n  ${log.join('\n  ')}`);
      }),
      { numRuns: RUNS, ...(SEED !== undefined && { seed: SEED }), endOnFailure: true },
    );
  }, 600_000);
});

/** The token with one character in its middle changed. */
function changed(token: string): string {
  const at = Math.floor(token.length / 2);
  const replacement = token[at] === 'A' ? 'B' : 'A';
  return token.slice(0, at) + replacement + token.slice(at + 1);
}
