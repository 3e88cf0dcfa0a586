/**
 * The distribute queue's age as the sandbox measures it for distributor-backlog-age:
 * SQS's ApproximateAgeOfOldestMessage counts the oldest message not yet deleted, one
 * a distributor failed and SQS will hand over again included, every minute.
 */
import { SendMessageCommand } from '@aws-sdk/client-sqs';
import { describe, expect, it } from 'vitest';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
// The sandbox's monitor looks at the queues every 100 ms here (10 s unscaled).
withSandbox({ canary: false, alarmTimeScale: 0.01 }, (s) => {
  sandbox = s;
});

describe('the queue age the sandbox measures', () => {
  it('counts a doorbell the distributor failed while it waits out its visibility timeout, not as an empty queue', async () => {
    // Prepare: a doorbell no turn can read, which the distributor fails on every receive.
    const sentAt = Date.now();
    await sandbox.wiring.sqs.send(
      new SendMessageCommand({
        QueueUrl: sandbox.wiring.distributeQueueUrl,
        MessageGroupId: 'poison',
        MessageDeduplicationId: `poison-${sentAt}`,
        MessageBody: '{"not":"a doorbell"}',
      }),
    );
    const key = 'queue:Distribute:ApproximateAgeOfOldestMessage';
    const deadline = Date.now() + 10_000;
    while (sandbox.metrics.total('DistributorRecordsFailed') === 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(sandbox.metrics.total('DistributorRecordsFailed')).toBe(1);

    // Act: 3 s of its 120 s visibility timeout pass (the pollers' long polls wait on).
    await new Promise((resolve) => setTimeout(resolve, 3_000));

    // Assert: the last second's measures say how old it is, as CloudWatch's would.
    const now = Date.now();
    const lastSecond = sandbox.metrics.points(key, now - 1_000, now + 1);
    expect(lastSecond.length).toBeGreaterThan(0);
    expect(Math.max(...lastSecond)).toBeGreaterThanOrEqual((now - 1_000 - sentAt) / 1000);
  }, 20_000);
});
