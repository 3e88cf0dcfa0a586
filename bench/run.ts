/**
 * `npm run bench` runs every scenario of SPEC §7; `npm run bench -- <scenario>`
 * one. Each starts its own sandbox, drives it from a worker thread through the
 * HTTP API with real receivers, and writes bench/results/<scenario>.json and a row
 * of bench/results/summary.md. Figures are measured in one run on this machine.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { type Sandbox, startSandbox } from '../sandbox/sandbox.ts';
import { PendingAnswers } from '../sandbox/threads.ts';
import { account, type CallCounts, countsSince, newCounts, recordInvocation, snapshotCounts } from './accounting.ts';
import { watchAlarms } from './alarms.ts';
import { startBystander } from './bystander.ts';
import { ALTERNATIVES, costPerMillion, endpointWaitPer100MsPerMillion } from './cost.ts';
import { sampleDepth } from './depth.ts';
import { floodProcess } from './flood.ts';
import { p99RatioInterval, requestLatencies } from './interval.ts';
import type { PublishTask, Report, TaskResult, TaskStats } from './load.ts';
import { loopDelay } from './loop-delay.ts';
import { type RawOperation, rawRate } from './raw-rate.ts';
import { firstTryTenant, percentile, type StageSample, stageSpread } from './stages.ts';
import { threadCpu } from './threads.ts';

const RESULTS = new URL('./results/', import.meta.url);
const SCENARIOS = ['baseline', 'hot-object', 'failing-endpoint', 'ceiling'] as const;
type Scenario = (typeof SCENARIOS)[number];

const machine = `${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.versions.node}`;

function progress(text: string): void {
  process.stdout.write(`  ${new Date().toISOString().slice(11, 19)} ${text}\n`);
}

/** Runs a calm publishing task on a thread of the bench's process. */
async function publishOnThread(task: PublishTask): Promise<TaskResult> {
  const publisher = new Worker(new URL('./load.ts', import.meta.url), {
    workerData: { role: 'publisher', task },
    name: `pub-${task.label}`,
  });
  try {
    return await new Promise<TaskResult>((resolve, reject) => {
      publisher.once('message', resolve);
      publisher.once('error', reject);
    });
  } finally {
    await publisher.terminate();
  }
}

interface CallTime {
  readonly service: string;
  readonly at: number;
  readonly ms: number;
}

function callSpread(times: readonly CallTime[], from: number, to: number): Record<string, { p50: number | null; p99: number | null }> {
  const out: Record<string, { p50: number | null; p99: number | null }> = {};
  for (const service of ['dynamodb', 'sqs']) {
    const ms = times.filter((t) => t.service === service && t.at >= from && t.at < to).map((t) => round1(t.ms));
    out[service] = { p50: percentile(ms, 50), p99: percentile(ms, 99) };
  }
  return out;
}

/** A sandbox with call accounting, and the load threads beside it: the receivers', and one per publishing task. */
async function harness(config: Record<string, unknown> = {}) {
  const counts = newCounts();
  const stages: StageSample[] = [];
  // Every AWS call's time as its caller saw it (not the long polls, which wait on purpose).
  const callTimes: CallTime[] = [];
  const cpu = threadCpu();
  const delay = loopDelay();
  const sandbox = await startSandbox({
    port: 0,
    canary: false,
    config,
    onCall: (call) => {
      account(counts, call);
      if (call.command !== 'ReceiveMessageCommand') callTimes.push({ service: call.service, at: Date.now(), ms: call.elapsedMs });
    },
    onInvocation: (fn, ms) => {
      recordInvocation(counts, fn, ms);
      stages.push({ stage: `${fn}_run`, at: Date.now(), ms });
    },
    onReceive: (queue, messages, receivedAt) => {
      for (const m of messages) {
        const tenant = firstTryTenant(queue, m.body);
        if (tenant)
          stages.push({
            stage: queue.startsWith('Distribute') ? 'doorbell_wait' : 'delivery_wait',
            tenant,
            at: receivedAt,
            ms: receivedAt - m.sentAt,
          });
      }
    },
  });
  const worker = new Worker(new URL('./load.ts', import.meta.url), { workerData: { role: 'receivers' }, name: 'bench-receivers' });
  const replies = new PendingAnswers<unknown>();
  let receiverUrl = '';
  const ready = new Promise<void>((resolve) => {
    worker.on('message', (message: { cmd: string; url?: string; id?: number }) => {
      if (message.cmd === 'ready') {
        receiverUrl = message.url as string;
        resolve();
        return;
      }
      replies.answer(message.id as number, message);
    });
  });
  await ready;
  const ask = <T>(command: unknown) => replies.ask((id) => worker.postMessage({ id, command })) as Promise<T>;
  const api = async (method: string, path: string, key: string, body?: unknown) => {
    const response = await fetch(`${sandbox.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    return (await response.json()) as Record<string, unknown>;
  };
  const tenant = async (name: string) => {
    // Tenants get the default limits of a deployment (SPEC §4: 500 requests/s, burst 1,000).
    const t = await api('POST', '/v1/admin/tenants', sandbox.adminKey, { name });
    return { id: String(t.id), key: String(t.api_key) };
  };
  // The webhooks on each resource: a task's events must reach every one on their resources and parent.
  const subscribed = new Map<string, string[]>();
  const webhook = async (key: string, resource: string, path: string) => {
    const w = await api('POST', '/v1/webhooks', key, { resource, url: `${receiverUrl}${path}` });
    await ask({ cmd: 'secrets', secrets: { [String(w.id)]: String(w.secret) } });
    subscribed.set(resource, [...(subscribed.get(resource) ?? []), String(w.id)]);
    return String(w.id);
  };
  const webhooksOf = (task: PublishTask) => [...new Set([task.parent, ...task.resources].flatMap((r) => subscribed.get(r) ?? []))];
  return {
    sandbox,
    counts,
    stages,
    /** Cores each thread kept busy in a window (see threads.ts). */
    cpu: cpu.cores,
    /** The functions' thread's longest event-loop delay in a window, and its seconds with a stall (see loop-delay.ts). */
    loopDelay: delay.window,
    /** p50 and p99 of the AWS calls' times in a window, by service, as their callers saw them. */
    callMs: (from: number, to: number) => callSpread(callTimes, from, to),
    /** How many DynamoDB requests dynalite read in a window, and the p50 and p99 of its own time on them. */
    emulatorMs: async (from: number, to: number) => {
      const ms = (await sandbox.emulators.dynamoServiceTimes(from, to)).map(round1);
      return { count: ms.length, p50: percentile(ms, 50), p99: percentile(ms, 99) };
    },
    tenant,
    webhook,
    answer: (path: string, answer: number | 'hang') => ask({ cmd: 'answer', path, answer }),
    /** Runs each task on a publishing thread of its own, and tells the receivers what was accepted. */
    run: (tasks: PublishTask[]) =>
      Promise.all(
        tasks.map(async (task) => {
          const result = task.flood ? await floodProcess(task) : await publishOnThread(task);
          await ask({ cmd: 'accepted', label: task.label, events: result.accepted, webhooks: webhooksOf(task) });
          return result.stats;
        }),
      ),
    report: async () => (await ask<{ report: Report }>({ cmd: 'report' })).report,
    /** Waits until every accepted event (of the labels) arrived, or the timeout. */
    drain: async (labels: string[], timeoutMs: number) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const r = await ask<{ report: Report }>({ cmd: 'report' });
        const pending = r.report.events.filter((e) => labels.includes(e.label) && e.receivedAt === null).length;
        if (pending === 0 || Date.now() > deadline) return r.report;
        progress(`waiting for ${pending} deliveries`);
        await new Promise((resolve) => setTimeout(resolve, 2_000));
      }
    },
    async stop() {
      cpu.stop();
      delay.stop();
      await worker.terminate();
      await sandbox.stop();
    },
  };
}

function latencies(report: Report, label: string, from = 0, to = Number.POSITIVE_INFINITY): number[] {
  return requestLatencies(report.events, label, from, to).flat();
}

/** Others' p99 latency in 5-second buckets from `from`: where in a storm latency rose. */
function p99Timeline(report: Report, label: string, from: number, to: number): Array<{ from_s: number; p99_ms: number | null }> {
  const buckets: Array<{ from_s: number; p99_ms: number | null }> = [];
  for (let t = from; t < to; t += 5_000) {
    buckets.push({ from_s: Math.round((t - from) / 1000), p99_ms: percentile(latencies(report, label, t, t + 5_000), 99) });
  }
  return buckets;
}

/** DynamoDB calls by target per delivered event, most first; those under `min` per event left out. */
function targetsPerEvent(counts: CallCounts, delivered: number, min = 0): Record<string, number> {
  return Object.fromEntries(
    Object.entries(counts.dynamoTargets)
      .map(([target, n]) => [target, n / Math.max(1, delivered)] as const)
      .filter(([, perEvent]) => perEvent >= min)
      .sort(([, a], [, b]) => b - a)
      .map(([target, perEvent]) => [target, Math.round(perEvent * 100) / 100]),
  );
}

/** DynamoDB calls by target, those made at least `min` times. */
function targetsAtLeast(counts: CallCounts, min: number): Record<string, number> {
  return Object.fromEntries(Object.entries(counts.dynamoTargets).filter(([, n]) => n >= min));
}

const round1 = (n: number) => Math.round(n * 10) / 10;
const round2 = (n: number) => Math.round(n * 100) / 100;
/** A p99 over another, or null when either is missing. */
const ratio = (a: number | null, b: number | null) => (a && b ? round2(a / b) : null);
/** The middle 90% of a label's p99 ratio between two windows, resampling whole requests (see interval.ts). */
const ratioInterval = (report: Report, label: string, storm: readonly [number, number], calm: readonly [number, number]) =>
  p99RatioInterval(requestLatencies(report.events, label, ...storm), requestLatencies(report.events, label, ...calm));

/** When a publishing task sent, from its first request to its last answer; `from`–`to` if it did not say. */
const sent = (stats: TaskStats | undefined, from: number, to: number): readonly [number, number] =>
  stats ? [stats.startedAt, stats.endedAt] : [from, to];
/** A publishing task's requests a second over the window it sent in. */
const requestsPerSecond = (stats: TaskStats | undefined, [from, to]: readonly [number, number]) =>
  Math.round((stats?.requests ?? 0) / ((to - from) / 1000));
/** The cores a flood's process kept busy from `from` to `to`, when it told its CPU time. */
const clientCores = (stats: TaskStats | undefined, from: number, to: number) =>
  stats?.cpuSeconds !== undefined ? round2(stats.cpuSeconds / ((to - from) / 1000)) : null;

/** A scenario's windows by name: each `[from, to]`. */
type Windows<K extends string> = Record<K, readonly [from: number, to: number]>;

/** One figure for each window of a scenario, under the window's name. */
async function perWindow<K extends string, T>(
  windows: Windows<K>,
  figure: (from: number, to: number) => T | Promise<T>,
): Promise<Record<K, T>> {
  const out = {} as Record<K, T>;
  for (const name of Object.keys(windows) as K[]) {
    const [from, to] = windows[name];
    out[name] = await figure(from, to);
  }
  return out;
}

/**
 * Calm traffic runs this long before a storm: the first 15 s warm the sandbox up
 * (the first pass over the 200 objects fills the distributor's lookup caches), and
 * the last 60 s are the "before" that the storm is compared with. The calm tenant
 * sends 3 requests/s, and the 10 events of one request travel together, so a
 * window's p99 is about its worst request or two: over 30 s (90 requests) the ratio
 * of two calm windows alone ranged 0.52–1.19 in seven runs; 60 s halves that luck.
 */
const WARM_MS = 15_000;
const BEFORE_MS = 60_000;
/** How long the hot object is flooded, and the failing tenant's endpoints fail: as long as "before". */
const STORM_MS = 60_000;
/** failing-endpoint: the second tenant's traffic to healthy endpoints, before they fail. */
const CONTROL_MS = 60_000;
/** The baseline's measured window, after the same warm-up. */
const MEASURE_MS = 30_000;
/** After the hot object's storm: a pause for its backlog, then its paced phase. */
const SETTLE_MS = 5_000;
const PACED_MS = 30_000;

/** Others' p50 and p99 in a window: the p99 is the target, the p50 shows a shift of the whole distribution. */
function spread(report: Report, label: string, from: number, to: number) {
  const lat = latencies(report, label, from, to);
  return { p50: percentile(lat, 50), p99: percentile(lat, 99) };
}

function callsPerEvent(counts: CallCounts, delivered: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [service, ops] of Object.entries(counts.calls)) {
    // The calls AWS would see: not the emulator's early empty receives (see accounting.ts).
    const billed = Object.entries(ops).filter(([op]) => !op.includes('not billed'));
    out[service] = Math.round((billed.reduce((a, [, n]) => a + n, 0) / Math.max(1, delivered)) * 100) / 100;
  }
  return out;
}

const steady = (h: { sandbox: Sandbox }, key: string, label: string, durationMs: number): PublishTask => ({
  label,
  apiUrl: h.sandbox.url,
  key,
  resources: Array.from({ length: 200 }, (_, i) => `item:${label}:${i}`),
  parent: `group:${label}`,
  eventsPerRequest: 10,
  // 30 events/s: well under what the one-process sandbox sustains (see `ceiling`), so
  // latency measures the pipeline, not a backlog.
  requestsPerSecond: 3,
  concurrency: 4,
  durationMs,
});

async function baseline() {
  const h = await harness();
  try {
    const t = await h.tenant('steady');
    await h.webhook(t.key, 'group:steady', '/steady');
    progress(
      `${WARM_MS / 1000} s of warm-up, then ${MEASURE_MS / 1000} s measured: 3 requests/s of 10 events over 200 objects, one webhook`,
    );
    const started = Date.now();
    const warmEnd = started + WARM_MS;
    // The counts when the warm-up ends: the measured window's calls are those made after.
    let atWarmEnd: CallCounts | undefined;
    const snapshot = setTimeout(() => {
      atWarmEnd = snapshotCounts(h.counts);
    }, WARM_MS);
    await h.run([steady(h, t.key, 'steady', WARM_MS + MEASURE_MS)]);
    clearTimeout(snapshot);
    const report = await h.drain(['steady'], 60_000);
    const window = (from: number, to: number, counts: CallCounts, seconds: number) => {
      const events = report.events.filter((e) => e.acceptedAt >= from && e.acceptedAt < to);
      const delivered = events.filter((e) => e.receivedAt !== null).length;
      const lat = latencies(report, 'steady', from, to);
      // Requests that reached the API's Lambda; its authorizer answers from cache, once a minute.
      const apiRequests = counts.invocations.api?.count ?? 0;
      // The functions' CPU, which a 512 MB Lambda runs slower than the sandbox's core did:
      // the API's thread, and the main thread (which also polls the queues for them).
      const cores = h.cpu(from, Math.min(to, from + seconds * 1000));
      const cpuSeconds = ((cores?.functions ?? 0) + (cores?.api ?? 0)) * seconds;
      const cost = costPerMillion(counts, delivered, apiRequests, Math.ceil(seconds / 60), cpuSeconds);
      return {
        delivered_per_s: Math.round(delivered / seconds),
        latency_ms: { p50: percentile(lat, 50), p99: percentile(lat, 99) },
        api_calls_per_event: callsPerEvent(counts, delivered),
        cost,
        cores,
        delivered,
        lost: events.length - delivered,
        per: (n: number) => round2(n / Math.max(1, delivered)),
      };
    };
    const warm = atWarmEnd ?? snapshotCounts(h.counts);
    const measured = countsSince(h.counts, warm);
    const steadyWindow = window(warmEnd, Number.POSITIVE_INFINITY, measured, MEASURE_MS / 1000);
    const first = window(started, warmEnd, warm, WARM_MS / 1000);
    return {
      delivered_per_s: steadyWindow.delivered_per_s,
      latency_ms: steadyWindow.latency_ms,
      api_calls_per_event: steadyWindow.api_calls_per_event,
      api_calls_by_operation: measured.calls,
      dynamodb_calls_per_event_by_target: targetsPerEvent(measured, steadyWindow.delivered),
      dynamodb_capacity_per_event: {
        wru: steadyWindow.per(measured.wru),
        rru: steadyWindow.per(measured.rru),
        index_wru: Object.fromEntries(Object.entries(measured.indexWru).map(([index, n]) => [index, steadyWindow.per(n)])),
      },
      invocations: measured.invocations,
      cpu_cores_by_thread: steadyWindow.cores,
      cost_per_million_usd: steadyWindow.cost.total,
      cost_breakdown_per_million_usd: steadyWindow.cost,
      // Each delivery invocation's POST, billed in AWS for as long as the endpoint takes to answer.
      cost_per_100ms_of_endpoint_answer_usd: endpointWaitPer100MsPerMillion(
        measured.invocations.delivery?.count ?? 0,
        steadyWindow.delivered,
      ),
      compare_per_million_usd: ALTERNATIVES,
      // The warm-up: the first pass over the 200 objects lists each in the schedule
      // index and fills the distributor's lookup caches. What a burst of new objects costs.
      first_pass: {
        seconds: WARM_MS / 1000,
        latency_ms: first.latency_ms,
        api_calls_per_event: first.api_calls_per_event,
        dynamodb_capacity_per_event: {
          wru: first.per(warm.wru),
          rru: first.per(warm.rru),
          index_wru: Object.fromEntries(Object.entries(warm.indexWru).map(([index, n]) => [index, first.per(n)])),
        },
        cost_per_million_usd: first.cost.total,
      },
      delivered: steadyWindow.delivered + first.delivered,
      lost: steadyWindow.lost + first.lost,
      bad_signatures: report.badSignatures,
      machine,
    };
  } finally {
    await h.stop();
  }
}

async function hotObject() {
  const h = await harness();
  try {
    const calm = await h.tenant('calm');
    const hammer = await h.tenant('hammer');
    await h.webhook(calm.key, 'group:calm', '/calm');
    await h.webhook(hammer.key, 'doc:hot', '/hot');
    progress(
      `${(WARM_MS + BEFORE_MS) / 1000} s of baseline traffic, then ${STORM_MS / 1000} s more with one object written as fast as a client can, ` +
        `then ${PACED_MS / 1000} s with it written at its rate, then ${STORM_MS / 1000} s with the same flood sent to a bystander server instead`,
    );
    // Watched from before the calm traffic: an alarm it fires shows before the storm.
    const alarmWatch = watchAlarms(() => h.sandbox.alarms());
    const before = h.run([steady(h, calm.key, 'calm', WARM_MS + BEFORE_MS + STORM_MS + SETTLE_MS + PACED_MS + SETTLE_MS + STORM_MS)]);
    await new Promise((resolve) => setTimeout(resolve, WARM_MS + BEFORE_MS));
    const stormStart = Date.now();
    const depth = sampleDepth(h.sandbox, { tenantId: hammer.id, resource: 'doc:hot' });
    const floodTask: PublishTask = {
      label: 'hot',
      apiUrl: h.sandbox.url,
      key: hammer.key,
      resources: ['doc:hot'],
      parent: 'doc:root',
      eventsPerRequest: 50,
      requestsPerSecond: 0,
      concurrency: 4,
      durationMs: STORM_MS,
      flood: true,
    };
    const [hotStats] = await h.run([floodTask]);
    const stormEnd = Date.now();
    const peak = await depth.stop();
    // The storm is the flood's sending, from its first request to its last answer, all of
    // it (its onset too, often its worst moment); its process starts a while after it is
    // asked for. The paced phase and the bystander's likewise.
    const flood = sent(hotStats, stormStart, stormEnd);

    // The same object at its full admitted rate from a client that does not flood: what
    // the hot object's accepted events cost the others, without the flood's requests.
    progress('the hot object written at its rate (2 requests/s of 50 events), not flooded');
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    const pacedStart = Date.now();
    const [pacedStats] = await h.run([
      {
        label: 'paced',
        apiUrl: h.sandbox.url,
        key: hammer.key,
        resources: ['doc:hot'],
        parent: 'doc:root',
        eventsPerRequest: 50,
        requestsPerSecond: 2,
        concurrency: 2,
        durationMs: PACED_MS,
      },
    ]);
    const pacedEnd = Date.now();

    // The machine's part: the same flood (process, priority, clients, requests, at the rate
    // the storm sent them) sent to a server that is not sluice and refuses every request at
    // once (bystander.ts). As fast as it could, it would send more than twice as many.
    const floodRate = requestsPerSecond(hotStats, flood);
    progress(`the same flood, ${floodRate} requests/s, sent to a bystander server that answers every request 429 at once`);
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    const bystander = await startBystander();
    const bystanderStart = Date.now();
    const [bystanderStats] = await h
      .run([{ ...floodTask, label: 'bystander', apiUrl: bystander.url, requestsPerSecond: floodRate }])
      .finally(() => bystander.stop());
    const bystanderEnd = Date.now();
    await before;
    const report = await h.drain(['calm', 'hot', 'paced'], 90_000);
    alarmWatch.stop();
    const pacedSending = sent(pacedStats, pacedStart, pacedEnd);
    const bystanderSending = sent(bystanderStats, bystanderStart, bystanderEnd);
    const alarms = alarmWatch.firedSince(flood[0]);
    const windows: Windows<'before' | 'during' | 'paced' | 'bystander'> = {
      before: [stormStart - BEFORE_MS, stormStart],
      during: flood,
      paced: pacedSending,
      bystander: bystanderSending,
    };
    const {
      before: calmBefore,
      during: calmDuring,
      paced: calmPaced,
      bystander: calmBystander,
    } = await perWindow(windows, (from, to) => spread(report, 'calm', from, to));
    return {
      others_p99_ratio: ratio(calmDuring.p99, calmBefore.p99),
      others_p99_ratio_interval: ratioInterval(report, 'calm', windows.during, windows.before),
      others_p99_ms: { before: calmBefore.p99, during: calmDuring.p99 },
      others_p50_ms: { before: calmBefore.p50, during: calmDuring.p50 },
      // What sluice's own handling of the flood cost the others: the storm against the same
      // flood sent to the bystander; and what such a flood costs them on this machine whatever
      // answers it (bystander ÷ before).
      others_p99_ratio_vs_bystander: ratio(calmDuring.p99, calmBystander.p99),
      others_p99_ratio_vs_bystander_interval: ratioInterval(report, 'calm', windows.during, windows.bystander),
      bystander: {
        others_p99_ratio: ratio(calmBystander.p99, calmBefore.p99),
        others_p99_ratio_interval: ratioInterval(report, 'calm', windows.bystander, windows.before),
        others_p99_ms: calmBystander.p99,
        others_p50_ms: calmBystander.p50,
        flood_requests_per_s: requestsPerSecond(bystanderStats, bystanderSending),
        flood_client_cores: clientCores(bystanderStats, bystanderStart, bystanderEnd),
      },
      others_p99_timeline: p99Timeline(report, 'calm', stormStart - BEFORE_MS, bystanderEnd),
      others_stages_ms: await perWindow(windows, (from, to) => stageSpread(h.stages, calm.id, from, to)),
      // Whether the AWS calls themselves slowed, as their callers saw them, and how much of a
      // DynamoDB call's time dynalite took from reading it to its answer's end.
      call_ms: await perWindow(windows, h.callMs),
      emulator_dynamodb_ms: await perWindow(windows, h.emulatorMs),
      // Who had the 2 cores: the storm's latency is mostly a question of who waited for one.
      cpu_cores_by_thread: await perWindow(windows, h.cpu),
      functions_loop_delay_ms: await perWindow(windows, h.loopDelay),
      paced: {
        others_p99_ratio: ratio(calmPaced.p99, calmBefore.p99),
        others_p99_ratio_interval: ratioInterval(report, 'calm', windows.paced, windows.before),
        others_p99_ms: calmPaced.p99,
        others_p50_ms: calmPaced.p50,
        hot_requests_per_s: requestsPerSecond(pacedStats, pacedSending),
        hot_accepted: pacedStats?.accepted ?? 0,
      },
      hot_peak_depth: peak,
      hot_accepted: hotStats?.accepted ?? 0,
      // The flood's strength: at or above the tenant's API throttle (500/s), all an API lets through.
      hot_requests_per_s: floodRate,
      hot_client_priority: hotStats?.priority ?? 'normal',
      // The flood's own process (all its threads), which the thread figures do not include.
      hot_client_cores: clientCores(hotStats, stormStart, stormEnd),
      hot_rejected: hotStats?.rejected ?? 0,
      // The flood's events the API failed to store: its request failed (an error answer, or none), or a 202 answered them internal. Not refusals.
      hot_failed: hotStats?.failed ?? 0,
      lost: report.events.filter((e) => e.receivedAt === null).length,
      alarms_fired: alarms,
      // Which calls the storm made: per tenant (meta items are keyed by tenant id).
      calm_tenant: calm.id,
      hot_tenant: hammer.id,
      api_calls_by_operation: h.counts.calls,
      dynamodb_calls_by_target: targetsAtLeast(h.counts, 100),
      invocations: h.counts.invocations,
      machine,
    };
  } finally {
    await h.stop();
  }
}

async function failingEndpoint() {
  // Probes every 10 s instead of 60 s, so recovery fits the 5-minute budget.
  const h = await harness({ probeIntervalMinSeconds: 10, probeIntervalMaxSeconds: 20 });
  try {
    const calm = await h.tenant('calm');
    const failing = await h.tenant('failing');
    await h.webhook(calm.key, 'group:calm', '/calm');
    await h.webhook(failing.key, 'group:failing', '/fail-500');
    await h.webhook(failing.key, 'group:failing', '/fail-hang');
    progress(
      `${(WARM_MS + BEFORE_MS) / 1000} s of baseline, then ${CONTROL_MS / 1000} s with a second tenant publishing to healthy endpoints, ` +
        `then ${STORM_MS / 1000} s with its endpoints failing (half 500, half time out), then recovery`,
    );
    const before = h.run([steady(h, calm.key, 'calm', WARM_MS + BEFORE_MS + CONTROL_MS + STORM_MS)]);
    await new Promise((resolve) => setTimeout(resolve, WARM_MS + BEFORE_MS));
    // The control: the same tenant and traffic with its endpoints answering, so the
    // storm's cost to the others can be told apart from what any second tenant costs.
    const controlStart = Date.now();
    const failingRun = h.run([{ ...steady(h, failing.key, 'failing', CONTROL_MS + STORM_MS), requestsPerSecond: 1 }]);
    await new Promise((resolve) => setTimeout(resolve, CONTROL_MS));
    await h.answer('/fail-500', 500);
    await h.answer('/fail-hang', 'hang');
    const failStart = Date.now();
    let quarantinedAt: number | null = null;
    const watcher = (async () => {
      while (quarantinedAt === null && Date.now() < failStart + STORM_MS) {
        if (h.sandbox.metrics.total('WebhooksQuarantined') >= 2) quarantinedAt = Date.now();
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    })();
    await watcher;
    const arrivalsAtQuarantine = (await h.report()).arrivals;
    const quarantineStart = Date.now();
    await failingRun;
    await before;
    const arrivalsLater = (await h.report()).arrivals;
    const minutes = (Date.now() - quarantineStart) / 60_000;
    const failingAttempts = ['/fail-500', '/fail-hang'].reduce(
      (sum, p) => sum + ((arrivalsLater[p] ?? 0) - (arrivalsAtQuarantine[p] ?? 0)),
      0,
    );
    progress('endpoints recover');
    await h.answer('/fail-500', 200);
    await h.answer('/fail-hang', 200);
    const report = await h.drain(['calm', 'failing'], 120_000);
    const windows: Windows<'before' | 'control' | 'during'> = {
      before: [controlStart - BEFORE_MS, controlStart],
      control: [controlStart, failStart],
      during: [failStart, failStart + STORM_MS],
    };
    const {
      before: calmBefore,
      control: calmControl,
      during: calmDuring,
    } = await perWindow(windows, (from, to) => spread(report, 'calm', from, to));
    return {
      others_p99_ratio: ratio(calmDuring.p99, calmBefore.p99),
      others_p99_ratio_interval: ratioInterval(report, 'calm', windows.during, windows.before),
      others_p99_ms: { before: calmBefore.p99, control: calmControl.p99, during: calmDuring.p99 },
      others_p50_ms: { before: calmBefore.p50, control: calmControl.p50, during: calmDuring.p50 },
      // What the failures themselves cost the others: the storm against the same tenant's
      // traffic to healthy endpoints; and what that traffic alone cost them (control ÷ before).
      others_p99_ratio_vs_control: ratio(calmDuring.p99, calmControl.p99),
      others_p99_ratio_vs_control_interval: ratioInterval(report, 'calm', windows.during, windows.control),
      control_p99_ratio: ratio(calmControl.p99, calmBefore.p99),
      others_p99_timeline: p99Timeline(report, 'calm', controlStart - BEFORE_MS, failStart + STORM_MS),
      others_stages_ms: await perWindow(windows, (from, to) => stageSpread(h.stages, calm.id, from, to)),
      call_ms: await perWindow(windows, h.callMs),
      emulator_dynamodb_ms: await perWindow(windows, h.emulatorMs),
      cpu_cores_by_thread: await perWindow(windows, h.cpu),
      functions_loop_delay_ms: await perWindow(windows, h.loopDelay),
      failing_attempts_per_min_after_quarantine: quarantinedAt ? Math.round((failingAttempts / Math.max(minutes, 1 / 60)) * 10) / 10 : null,
      quarantined_after_s: quarantinedAt ? Math.round((quarantinedAt - failStart) / 1000) : null,
      lost: report.events.filter((e) => e.receivedAt === null).length,
      calm_tenant: calm.id,
      failing_tenant: failing.id,
      api_calls_by_operation: h.counts.calls,
      dynamodb_calls_by_target: targetsAtLeast(h.counts, 100),
      invocations: h.counts.invocations,
      machine,
    };
  } finally {
    await h.stop();
  }
}

async function ceiling() {
  const h = await harness();
  try {
    // One calling thread per core: one alone runs out of its core (the SDK's work per
    // call is three to four times the emulator's) while the emulators still have time to spare.
    const callers = Math.max(1, os.availableParallelism());
    progress(
      `raw emulator rates: 5 s of PutItem and of SendMessage from ${callers} threads, 32 calls at a time each, after 2 s of warm-up`,
    );
    const rate = async (operation: RawOperation) => {
      // The pipeline meets emulators its warm-up has compiled: so do the raw rates.
      const start = Date.now() + 2_000;
      const end = start + 5_000;
      const n = await rawRate(operation, start, end, callers - 1);
      // CPU per call: the callers' threads (this one and the raw callers), and the emulators'.
      const cores = h.cpu(start, end);
      const perCall = (roles: string[]) =>
        cores ? Math.round((roles.reduce((sum, role) => sum + (cores[role] ?? 0), 0) * 5e6) / Math.max(1, n)) : null;
      return {
        perSecond: Math.round(n / 5),
        cpuUsPerCall: { sdk_client: perCall(['functions', 'raw callers']), emulator: perCall(['emulators']) },
      };
    };
    const rawRates = async () => ({
      dynamodb: await rate({ service: 'dynamodb', client: h.sandbox.emulators.dynamo, table: h.sandbox.wiring.controlTable }),
      sqs: await rate({ service: 'sqs', client: h.sandbox.emulators.sqs, queueUrl: h.sandbox.queues.Deliver?.deadLetterUrl as string }),
    });
    // The machine's speed drifts within minutes: the raw rates are measured before the
    // pipeline's run and again after it, and the higher of the two is what the emulators allow.
    const rawBefore = await rawRates();
    const t = await h.tenant('ceiling');
    await h.webhook(t.key, 'group:max', '/max');
    const before = structuredClone(h.counts.calls);
    progress('20 s of traffic as fast as the pipeline takes it (16 clients, no pacing)');
    const started = Date.now();
    await h.run([{ ...steady(h, t.key, 'max', 20_000), requestsPerSecond: 0, concurrency: 16 }]);
    const report = await h.drain(['max'], 120_000);
    const delivered = report.events.filter((e) => e.receivedAt !== null).length;
    const elapsed = (Math.max(...report.events.map((e) => e.receivedAt ?? 0)) - started) / 1000;
    const pipelineCpu = h.cpu(started, started + 20_000);
    const pipelineCalls = structuredClone(h.counts.calls);
    progress('raw emulator rates again, after the pipeline');
    const rawAfter = await rawRates();
    const dynamodb = Math.max(rawBefore.dynamodb.perSecond, rawAfter.dynamodb.perSecond);
    const sqs = Math.max(rawBefore.sqs.perSecond, rawAfter.sqs.perSecond);
    const rawFaster = rawAfter.dynamodb.perSecond > rawBefore.dynamodb.perSecond ? rawAfter : rawBefore;
    const ops = (service: string) =>
      Object.values(pipelineCalls[service] ?? {}).reduce((a, b) => a + b, 0) -
      Object.values(before[service] ?? {}).reduce((a, b) => a + b, 0);
    const opsPerEvent = { dynamodb: ops('dynamodb') / Math.max(1, delivered), sqs: ops('sqs') / Math.max(1, delivered) };
    // Both emulators share one process: their time per event adds up.
    const allowed = 1 / (opsPerEvent.dynamodb / dynamodb + opsPerEvent.sqs / sqs);
    const pipeline = delivered / elapsed;
    return {
      emulator_ops_per_s: { dynamodb, sqs },
      emulator_ops_per_s_measured: {
        before: { dynamodb: rawBefore.dynamodb.perSecond, sqs: rawBefore.sqs.perSecond },
        after: { dynamodb: rawAfter.dynamodb.perSecond, sqs: rawAfter.sqs.perSecond },
      },
      pipeline_events_per_s: Math.round(pipeline),
      ops_per_event: { dynamodb: Math.round(opsPerEvent.dynamodb * 100) / 100, sqs: Math.round(opsPerEvent.sqs * 100) / 100 },
      ratio: Math.round((pipeline / allowed) * 100) / 100,
      // Why the ratio stays well below 1 on few cores: each call costs its caller CPU too (the SDK's
      // serialising, signing and HTTP), and the pipeline's callers share the cores with the
      // emulators, where the raw rates had a core to spare for theirs.
      raw_cpu_us_per_call: { dynamodb: rawFaster.dynamodb.cpuUsPerCall, sqs: rawFaster.sqs.cpuUsPerCall },
      cpu_cores_by_thread: pipelineCpu,
      calls_by_operation: pipelineCalls,
      dynamodb_calls_per_event_by_target: targetsPerEvent(h.counts, delivered, 0.01),
      machine,
    };
  } finally {
    await h.stop();
  }
}

const RUNNERS: Record<Scenario, () => Promise<Record<string, unknown>>> = {
  baseline,
  'hot-object': hotObject,
  'failing-endpoint': failingEndpoint,
  ceiling,
};

function summaryRow(scenario: Scenario, r: Record<string, unknown>): string {
  const pick: Record<Scenario, string[]> = {
    baseline: ['delivered_per_s', 'latency_ms', 'cost_per_million_usd', 'lost'],
    'hot-object': [
      'others_p99_ratio',
      'others_p99_ratio_interval',
      'others_p99_ratio_vs_bystander',
      'hot_peak_depth',
      'hot_accepted',
      'hot_rejected',
      'hot_failed',
      'lost',
    ],
    'failing-endpoint': [
      'others_p99_ratio',
      'others_p99_ratio_interval',
      'others_p99_ratio_vs_control',
      'quarantined_after_s',
      'failing_attempts_per_min_after_quarantine',
      'lost',
    ],
    ceiling: ['pipeline_events_per_s', 'ops_per_event', 'ratio'],
  };
  const figures = pick[scenario].map((k) => `${k}=${JSON.stringify(r[k])}`).join(', ');
  return `| ${scenario} | ${figures} | ${new Date().toISOString().slice(0, 16)}Z |`;
}

const asked = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const chosen = (asked.length > 0 ? asked : SCENARIOS) as Scenario[];
for (const name of chosen) if (!SCENARIOS.includes(name)) throw new Error(`Unknown scenario ${name}; one of ${SCENARIOS.join(', ')}`);
mkdirSync(RESULTS, { recursive: true });
const summaryPath = new URL('summary.md', RESULTS);
for (const scenario of chosen) {
  process.stdout.write(`${scenario}\n`);
  const result = await RUNNERS[scenario]();
  writeFileSync(new URL(`${scenario}.json`, RESULTS), `${JSON.stringify(result, null, 2)}\n`);
  let rows: string[] = [];
  try {
    rows = readFileSync(summaryPath, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('| ') && !l.startsWith('| scenario') && !l.startsWith('| ---') && !l.startsWith(`| ${scenario} `));
  } catch {
    // First run.
  }
  rows.push(summaryRow(scenario, result));
  rows.sort();
  writeFileSync(summaryPath, `Machine: ${machine}\n\n| scenario | figures | when |\n| --- | --- | --- |\n${rows.join('\n')}\n`);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}
process.exit(0);
