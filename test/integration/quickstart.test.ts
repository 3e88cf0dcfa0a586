/**
 * The README's quick start: the walk-through `npm start` prints, pasted into a
 * shell as is, creates a tenant and a webhook and gets the event delivered.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { THROTTLED_REPORT_MS } from '../../sandbox/api-server.ts';
import { type Sandbox, startSandbox, walkthrough } from '../../sandbox/sandbox.ts';
import { createTenant } from '../support/api.ts';

let sandbox: Sandbox;
const invocations: string[] = [];
const receives: Array<{ queue: string; body: string; wait: number }> = [];

beforeAll(async () => {
  sandbox = await startSandbox({
    port: 0,
    // The canary calls the API too, at the start and each minute: its calls were counted
    // as the invocations of a test's own requests whenever a run of it overlapped them.
    canary: false,
    onInvocation: (fn) => invocations.push(fn),
    onReceive: (queue, messages, at) => receives.push(...messages.map((m) => ({ queue, body: m.body, wait: at - m.sentAt }))),
  });
});

afterAll(async () => {
  await sandbox?.stop();
});

describe('quick start', () => {
  it('delivers the example event to the sandbox inbox when the printed commands are run', async () => {
    const { stdout } = await promisify(execFile)('bash', ['-c', walkthrough(sandbox.url, sandbox.adminKey)], { timeout: 20_000 });
    const lines = stdout.trim().split('\n');
    const inbox = JSON.parse(lines.at(-1)?.replace(/^.*?(\{"data")/, '$1') ?? '{}') as {
      data: Array<{ headers: Record<string, string>; body: { events: Array<{ type: string; seq: number; data: unknown }> } }>;
    };
    const types = inbox.data.flatMap((entry) => entry.body.events.map((e) => e.type));
    expect(types).toEqual(['webhook.ping', 'task.changed']);
    const delivered = inbox.data[1];
    expect(delivered?.body.events[0]).toMatchObject({ seq: 1, data: { title: 'Ship it' } });
    expect(delivered?.headers['webhook-signature']).toMatch(/^v1,/);
    // The event source mappings told what they received, and how long it had waited (the bench's stage waits).
    const doorbell = receives.find((r) => r.queue === 'Distribute' && r.body.includes('"task:42"'));
    const delivery = receives.find((r) => r.queue === 'Deliver' && r.body.includes('Ship it'));
    for (const received of [doorbell, delivery]) {
      expect(received?.wait).toBeGreaterThanOrEqual(0);
      expect(received?.wait).toBeLessThan(5_000);
    }
  });
});

describe('sandbox threads', () => {
  it('serves the API from a thread of its own: it answers while the thread of the pollers and metrics is busy', async () => {
    const { Worker } = await import('node:worker_threads');
    // The client thread is started, and its fetch loaded by a first request, before this
    // thread is kept busy: on a loaded machine starting it took most of the busy time.
    const client = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const health = () => fetch(workerData.url + '/v1/health').then((r) => r.json());
       health().then(() => {
         parentPort.once('message', () => health().then((body) => parentPort.postMessage({ at: Date.now(), body })));
         parentPort.postMessage('ready');
       });`,
      { eval: true, workerData: { url: sandbox.url } },
    );
    await new Promise((resolve) => client.once('message', resolve));
    const answered = new Promise<{ at: number; body: unknown }>((resolve) => client.once('message', resolve));
    // This thread runs the pollers, the scheduled functions and the metrics; keep it busy.
    // The client's thread gets the message and asks while this one spins.
    client.postMessage('go');
    const busyUntil = Date.now() + 1_500;
    while (Date.now() < busyUntil) {
      // Spin.
    }
    const { at, body } = await answered;
    await client.terminate();
    expect(body).toEqual({ status: 'ok' });
    expect(at).toBeLessThan(busyUntil);
  });

  it('answers from this thread what lives on it: notices, and the metrics the API records', async () => {
    const admin = { authorization: `Bearer ${sandbox.adminKey}`, 'content-type': 'application/json' };
    const created = await fetch(`${sandbox.url}/v1/admin/tenants`, {
      method: 'POST',
      headers: admin,
      body: JSON.stringify({ name: 'threads' }),
    });
    const { api_key: key } = (await created.json()) as { api_key: string };
    const accepted = sandbox.metrics.total('EventsAccepted');
    const response = await fetch(`${sandbox.url}/v1/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ events: [{ resource: 'doc:1', type: 'doc.saved', data: {} }] }),
    });
    expect(response.status).toBe(202);
    // Recorded before the answer left the API's thread.
    expect(sandbox.metrics.total('EventsAccepted')).toBe(accepted + 1);
    await sandbox.notifier.webhookDisabled({
      type: 'webhook.disabled',
      tenant: 'ten_threads',
      webhook: 'wh_threads',
      url: 'https://example.com/hook',
      reason: 'gone',
      last_error: null,
      at: new Date(0).toISOString(),
    });
    const notices = (await (await fetch(`${sandbox.url}/sandbox/notifications`)).json()) as { data: Array<{ webhook: string }> };
    expect(notices.data.map((n) => n.webhook)).toContain('wh_threads');
  });

  it("counts an invocation of the API's Lambda only for requests API Gateway lets through", async () => {
    const { key } = await createTenant(sandbox, 'gateway', { rate_per_second: 1, burst: 2 });
    const before = invocations.filter((fn) => fn === 'api').length;
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const response = await fetch(`${sandbox.url}/v1/webhooks`, { headers: { authorization: `Bearer ${key}` } });
      statuses.push(response.status);
    }
    const unauthorized = await fetch(`${sandbox.url}/v1/webhooks`, { headers: { authorization: 'Bearer sk_nobody' } });
    expect(unauthorized.status).toBe(401);
    // The burst of two gets through; the usage plan refuses the rest, and the authorizer the unknown key.
    expect(statuses).toEqual([200, 200, 429, 429, 429]);
    expect(invocations.filter((fn) => fn === 'api').length - before).toBe(2);
  });

  it("answers a throttled key alike whether the authorizer's answer was cached (before the app) or not (in it)", async () => {
    const { key } = await createTenant(sandbox, 'refusals', { rate_per_second: 1, burst: 1 });
    const read = async (authorization: string) => {
      const response = await fetch(`${sandbox.url}/v1/webhooks?limit=5`, { headers: { authorization } });
      return {
        status: response.status,
        type: response.headers.get('content-type'),
        retryAfter: response.headers.get('retry-after'),
        body: await response.json(),
      };
    };

    expect((await read(`Bearer ${key}`)).status).toBe(200);
    // Its answer is cached for this header: refused before the app.
    const beforeApp = await read(`Bearer ${key}`);
    // Another spelling of the same key has no cached answer: the authorizer runs, and the app refuses it.
    const inApp = await read(`bearer ${key}`);

    expect(beforeApp).toEqual({
      status: 429,
      type: 'application/json',
      retryAfter: '1',
      body: { error: { code: 'rate_limited', message: 'Too many requests for this key; slow down.' } },
    });
    expect(inApp).toEqual(beforeApp);
  });

  it('counts each request the usage plan refuses, before the app or in it, and files a ticket for them as for rejected events, waking nobody', async () => {
    const alarm = async () => {
      const response = await fetch(`${sandbox.url}/v1/admin/alarms`, { headers: { authorization: `Bearer ${sandbox.adminKey}` } });
      const { data } = (await response.json()) as { data: Array<{ name: string; state: string; severity: string; value: number | null }> };
      return data.find((a) => a.name === 'events-rejected-or-dropped');
    };
    expect((await alarm())?.state).toBe('OK');
    const { key } = await createTenant(sandbox, 'throttled', { rate_per_second: 1, burst: 1 });
    // The tests before refused requests too: their sum is reported by now.
    await new Promise((resolve) => setTimeout(resolve, 2 * THROTTLED_REPORT_MS));
    const before = sandbox.metrics.total('RequestsThrottled');
    const statuses = new Map<number, number>();
    const send = async (authorization: string) => {
      const response = await fetch(`${sandbox.url}/v1/events`, {
        method: 'POST',
        headers: { authorization, 'content-type': 'application/json' },
        body: JSON.stringify({ events: [{ resource: 'doc:1', type: 'doc.saved', data: {} }] }),
      });
      await response.arrayBuffer();
      statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
    };
    // The first takes the burst's token; the spelling no answer is cached for is refused in the app.
    await send(`Bearer ${key}`);
    await send(`bearer ${key}`);
    // Past the alarm's 1,000 in 5 minutes: 50 at a time until over 1,000 were refused. A
    // fixed 1,000 more were 999 refused on a loaded machine, whose rounds took seconds, each
    // a token of the key's rate of 1 a second.
    const started = Date.now();
    for (let round = 0; round < 40 && (statuses.get(429) ?? 0) <= 1_000; round++) {
      await Promise.all(Array.from({ length: 50 }, () => send(`Bearer ${key}`)));
    }
    const refused = statuses.get(429) ?? 0;
    expect(refused).toBeGreaterThan(1_000);
    // The throttle let through its burst and a request a second, no more.
    expect(statuses.get(202) ?? 0).toBeLessThanOrEqual(1 + Math.ceil((Date.now() - started) / 1_000));
    // Summed for a quarter of a second before they reach the metrics.
    await expect.poll(() => sandbox.metrics.total('RequestsThrottled') - before, { timeout: 5_000 }).toBe(refused);
    // No event of theirs reached ingest, which counts rejected events: the throttle's own count
    // alarms, as a ticket: one tenant's app retrying past its own throttle is its owner's to fix.
    await expect.poll(async () => (await alarm())?.state, { timeout: 5_000 }).toBe('ALARM');
    expect((await alarm())?.severity).toBe('ticket');
  });
});

describe('npm start', () => {
  it('prints its admin key and stops cleanly on Ctrl-C (SIGINT)', async () => {
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['sandbox/main.ts'], {
      env: { ...process.env, PORT: '0', SLUICE_ADMIN_KEY: `ak_${'q'.repeat(43)}` },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    // Starting takes seconds, 13 on a loaded 2-core machine: how long is not what this tests.
    const deadline = Date.now() + 40_000;
    while (!output.includes('Ctrl-C stops the sandbox') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(output).toContain(`admin key: ak_${'q'.repeat(43)}`);
    expect(output).toMatch(/curl -s -X POST http:\/\/127\.0\.0\.1:\d+\/v1\/admin\/tenants/);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(output).toContain('Stopping sluice sandbox');
  }, 60_000);
});

describe('npm start, stopped twice', () => {
  it('exits at once on a second Ctrl-C, without waiting for a delivery to an endpoint that hangs', async () => {
    const { spawn } = await import('node:child_process');
    const http = await import('node:http');
    // An endpoint that answers its verification ping and then never answers a delivery.
    const hanging = http.createServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => {
        body += chunk.toString();
      });
      req.on('end', () => {
        if (body.includes('webhook.ping')) res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => hanging.listen(0, '127.0.0.1', resolve));
    const adminKey = `ak_${'h'.repeat(43)}`;
    const child = spawn(process.execPath, ['sandbox/main.ts'], {
      env: { ...process.env, PORT: '0', SLUICE_ADMIN_KEY: adminKey },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => {
        output += chunk.toString();
      });
      // Starting takes seconds, 13 on a loaded 2-core machine: how long is not what this tests.
      let deadline = Date.now() + 40_000;
      while (!output.includes('Ctrl-C stops the sandbox') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const url = /sluice sandbox on (http:\/\/127\.0\.0\.1:\d+)/.exec(output)?.[1] as string;
      const post = async (path: string, key: string, body: unknown) =>
        (
          await fetch(`${url}${path}`, {
            method: 'POST',
            headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
            body: JSON.stringify(body),
          })
        ).json() as Promise<Record<string, string>>;
      const tenantKey = String((await post('/v1/admin/tenants', adminKey, { name: 'stops-twice' })).api_key);
      const { port } = hanging.address() as { port: number };
      await post('/v1/webhooks', tenantKey, { resource: 'h:1', url: `http://127.0.0.1:${port}/hook` });
      let delivering = false;
      hanging.on('request', () => {
        delivering = true;
      });
      await post('/v1/events', tenantKey, { events: [{ resource: 'h:1', type: 'a.b', data: 1 }] });
      deadline = Date.now() + 15_000;
      while (!delivering && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(delivering).toBe(true);

      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGINT');
      await new Promise((r) => setTimeout(r, 300));
      const again = Date.now();
      child.kill('SIGINT');
      expect(await exited).toBe(130);
      // Well before the delivery's 10 s timeout, which the first stop waits for.
      expect(Date.now() - again).toBeLessThan(3_000);
      expect(output).toContain('Stopping now, without waiting');
    } finally {
      child.kill('SIGKILL');
      hanging.closeAllConnections();
      await new Promise((resolve) => hanging.close(resolve));
    }
  }, 90_000);
});

/** `npm start` that is expected not to start: its exit status and what it printed to stderr. */
async function failedStart(env: Record<string, string>): Promise<{ code: number | null; errors: string }> {
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, ['sandbox/main.ts'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let errors = '';
  child.stderr.on('data', (chunk: Buffer) => {
    errors += chunk.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  return { code, errors };
}

describe('npm start on a port in use', () => {
  it('says in one line that the port is taken and how to pick another, and exits with status 1', async () => {
    const port = Number(new URL(sandbox.url).port);
    const { code, errors } = await failedStart({ PORT: String(port) });
    expect(code).toBe(1);
    expect(errors).toContain(`Port ${port} is in use`);
    expect(errors).toContain('PORT=');
    // A sentence, not a stack trace.
    expect(errors).not.toMatch(/^\s+at /m);
  }, 30_000);
});

describe('npm start with a setting that cannot be', () => {
  it.each([
    ['an admin key too short', { SLUICE_ADMIN_KEY: 'ak_short' }, 'SLUICE_ADMIN_KEY must be ak_ followed by 20 to 200'],
    ['a setting out of its bounds', { SLUICE_OBJECT_QUEUE_CAP: '-1' }, 'Invalid sluice configuration'],
    // Powertools takes a level it does not know for INFO: louder than the default, without a word.
    ['a log level that is none', { POWERTOOLS_LOG_LEVEL: 'verbose' }, 'POWERTOOLS_LOG_LEVEL must be one of'],
  ])(
    '%s: says which and why in a sentence, and exits with status 1',
    async (_name, env, message) => {
      const { code, errors } = await failedStart({ PORT: '0', ...env });
      expect(code).toBe(1);
      expect(errors).toContain(message);
      expect(errors).toContain('sluice sandbox not started.');
      // A sentence, not a stack trace.
      expect(errors).not.toMatch(/^\s+at /m);
    },
    30_000,
  );

  it('lists a bad PORT, a bad SLUICE_ADMIN_KEY and a bad setting in one sentence, not one a start', async () => {
    const { code, errors } = await failedStart({ PORT: 'x', SLUICE_ADMIN_KEY: 'ak_short', SLUICE_OBJECT_QUEUE_CAP: '-1' });
    expect(code).toBe(1);
    expect(errors).toMatch(
      /(?=.*PORT must be a port number \(0 to 65535\), not x)(?=.*SLUICE_ADMIN_KEY must be ak_)(?=.*objectQueueCap must be)/,
    );
    expect(errors).toContain('sluice sandbox not started.');
    expect(errors).not.toMatch(/^\s+at /m);
  }, 30_000);

  it('is refused by startSandbox with the admin key and the settings in one ConfigError', async () => {
    const started = startSandbox({ port: 0, adminKey: 'ak_short', config: { objectQueueCap: 0 } });
    await expect(started).rejects.toThrow(/(?=.*objectQueueCap must be)(?=.*SLUICE_ADMIN_KEY must be ak_)/);
  });

  it('refuses an ingest grace an ingest can outlive, as the stack does: with 1 ms, a request of many events lost some it answered accepted', async () => {
    for (const ingestGraceMs of [1, 58_000]) {
      await expect(startSandbox({ port: 0, config: { ingestGraceMs } }), String(ingestGraceMs)).rejects.toThrow(
        /ingestGraceMs must be more than twice the API function's timeout \(58000 ms\)/,
      );
    }
    const { code, errors } = await failedStart({ PORT: '0', SLUICE_INGEST_GRACE_MS: '1', SLUICE_OBJECT_QUEUE_CAP: '0' });
    expect(code).toBe(1);
    expect(errors).toMatch(/(?=.*ingestGraceMs must be more than twice)(?=.*objectQueueCap must be)/);
    const started = await startSandbox({ port: 0, config: { ingestGraceMs: 58_001 } });
    await started.stop();
  }, 30_000);
});

describe('SLUICE_DATA_DIR', () => {
  it('is refused to a second sandbox while one runs on it, in a sentence that names the first; it is free again once that one stops', async () => {
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dataDir = mkdtempSync(join(tmpdir(), 'sluice-data-'));
    const first = await startSandbox({ port: 0, dataDir });
    try {
      const { code, errors } = await failedStart({ PORT: '0', SLUICE_DATA_DIR: dataDir });
      expect(code).toBe(1);
      expect(errors).toContain(`${dataDir} is in use by another sandbox (process ${process.pid})`);
      expect(errors).not.toMatch(/^\s+at /m);
    } finally {
      await first.stop();
    }
    const second = await startSandbox({ port: 0, dataDir });
    await second.stop();
  }, 40_000);

  it('that names a file, or a folder under one, is refused in a sentence that says so, not a stack trace', async () => {
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const file = join(mkdtempSync(join(tmpdir(), 'sluice-data-')), 'state.json');
    writeFileSync(file, '{}');
    for (const dataDir of [file, join(file, 'sub')]) {
      const { code, errors } = await failedStart({ PORT: '0', SLUICE_DATA_DIR: dataDir });
      expect(code, dataDir).toBe(1);
      expect(errors, dataDir).toContain(`SLUICE_DATA_DIR ${dataDir} cannot be used`);
      expect(errors, dataDir).toContain('sluice sandbox not started.');
      expect(errors, dataDir).not.toMatch(/^\s+at /m);
    }
  }, 40_000);

  it('whose DynamoDB store does not open is refused at the start, saying so and what to do, not as a thread that stopped', async () => {
    const { mkdirSync, mkdtempSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dataDir = mkdtempSync(join(tmpdir(), 'sluice-data-'));
    // A LevelDB whose CURRENT names a manifest that is not there (a copy cut short, say).
    mkdirSync(join(dataDir, 'dynamodb'));
    writeFileSync(join(dataDir, 'dynamodb', 'CURRENT'), 'MANIFEST-000009\n');
    const { code, errors } = await failedStart({ PORT: '0', SLUICE_DATA_DIR: dataDir });
    expect(code).toBe(1);
    expect(errors).toContain(`SLUICE_DATA_DIR ${dataDir} cannot be used: its DynamoDB store`);
    expect(errors).toContain('sluice sandbox not started.');
    expect(errors).not.toMatch(/^\s+at /m);
  }, 40_000);

  it('whose SQS store is not a database is refused at the start, naming the folder and what to do', async () => {
    const { mkdirSync, mkdtempSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dataDir = mkdtempSync(join(tmpdir(), 'sluice-data-'));
    mkdirSync(join(dataDir, 'sqs'));
    writeFileSync(join(dataDir, 'sqs', 'fauxqs.db'), 'not a database');
    const { code, errors } = await failedStart({ PORT: '0', SLUICE_DATA_DIR: dataDir });
    expect(code).toBe(1);
    expect(errors).toContain(`SLUICE_DATA_DIR ${dataDir} cannot be used: its SQS store`);
    expect(errors).toContain('sluice sandbox not started.');
    expect(errors).not.toMatch(/^\s+at /m);
  }, 40_000);

  it('keeps tenants and their throttles across a restart', async () => {
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { call, createTenant } = await import('../support/api.ts');
    const dataDir = mkdtempSync(join(tmpdir(), 'sluice-data-'));
    const adminKey = `ak_${'p'.repeat(43)}`;
    const first = await startSandbox({ port: 0, dataDir, adminKey });
    const tenant = await createTenant(first, 'persisted', { rate_per_second: 1, burst: 1 });
    await first.stop();

    const second = await startSandbox({ port: 0, dataDir, adminKey });
    try {
      expect((await call(second, 'GET', '/v1/webhooks', { key: tenant.key })).status).toBe(200);
      expect((await call(second, 'GET', '/v1/webhooks', { key: tenant.key })).status).toBe(429);
    } finally {
      await second.stop();
    }
  });
});
