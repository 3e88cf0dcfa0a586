/**
 * The benchmark's accounting of a running sandbox: every AWS call the functions make,
 * SNS's too, and none that stands in for what AWS does on its own.
 */
import { describe, expect, it } from 'vitest';
import { account, newCounts } from '../../bench/accounting.ts';
import { sampleDepth } from '../../bench/depth.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant, createWebhook, publish } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;
const counts = newCounts();

// alarmTimeScale 0.01: the sandbox's own queue monitor runs every 100 ms, not 10 s.
withSandbox({ canary: false, alarmTimeScale: 0.01, onCall: (call) => account(counts, call) }, async (s, r) => {
  [sandbox, receiver] = [s, r];
});

describe('benchmark accounting of the sandbox', () => {
  it('counts no call that stands in for what AWS does itself: creating the queues, CloudWatch reading their depth', async () => {
    // The monitor reads the dead-letter queues' depth every 100 ms here.
    await new Promise((resolve) => setTimeout(resolve, 500));

    expect(counts.calls.sqs?.CreateQueueCommand).toBeUndefined();
    expect(counts.calls.sqs?.GetQueueAttributesCommand).toBeUndefined();
  });

  it("counts the SNS publish of a webhook's disabled notice, as an SNS request and not an SQS one", async () => {
    const tenant = await createTenant(sandbox, 'notified');
    const webhook = await createWebhook(sandbox, tenant.key, { resource: 'doc:gone', url: `${receiver.url}/gone` });
    receiver.answer('/gone', 410);
    const sqsBefore = counts.sqsStandardRequests + counts.sqsFifoRequests;
    const sqsCallsBefore = Object.values(counts.calls.sqs ?? {}).reduce((a, b) => a + b, 0);

    expect((await publish(sandbox, tenant.key, [{ resource: 'doc:gone', type: 'doc.changed', data: {} }])).status).toBe(202);
    await receiver.waitFor(() => sandbox.notifier.notices.some((n) => n.webhook === webhook.id));

    expect(counts.calls.sns).toEqual({ PublishCommand: 1 });
    expect(counts.snsRequests).toBe(1);
    // The SQS requests are the SQS calls (one each, their bodies far under 64 KiB): none is SNS's.
    const sqsCalls = Object.entries(counts.calls.sqs ?? {})
      .filter(([op]) => !op.includes('not billed'))
      .reduce((a, [, n]) => a + n, 0);
    expect(counts.sqsStandardRequests + counts.sqsFifoRequests - sqsBefore).toBeLessThanOrEqual(sqsCalls - sqsCallsBefore);
  });

  it("counts none of the bench's own reads of the hot object's depth: they are not the pipeline's", async () => {
    const tenant = await createTenant(sandbox, 'sampled');
    const from = Date.now();

    const depth = sampleDepth(sandbox, { tenantId: tenant.id, resource: 'doc:hot' }, 20);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const peak = await depth.stop();

    // dynalite answered the reads (a dozen or so), and the accounting saw none of them.
    expect(peak).toBe(0);
    expect((await sandbox.emulators.dynamoServiceTimes(from, Date.now() + 1)).length).toBeGreaterThanOrEqual(5);
    expect(counts.dynamoTargets[`GetItem ${tenant.id}/meta`]).toBeUndefined();
  });
});
