/**
 * The message groups of SPEC §2's two queues, as the pipeline sends them: a doorbell's
 * group is its tenant and object (one distributor at a time per object, and one object's
 * backlog never in the way of another's), a delivery's its tenant (SQS fair queues: one
 * tenant's retries cannot crowd the others'). The emulator accepts a standard queue's
 * MessageGroupId and gives it back to no one, so the sends themselves are read.
 */
import { describe, expect, it } from 'vitest';
import { objectGroupId } from '../../functions/core/keys.ts';
import type { ObservedCall } from '../../sandbox/observe.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant, createWebhook, publish } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;
const calls: ObservedCall[] = [];

withSandbox(
  {
    canary: false,
    onCall: (call) => {
      if (call.service === 'sqs' && /^SendMessage/.test(call.command)) calls.push(call);
    },
  },
  (s, r) => {
    [sandbox, receiver] = [s, r];
  },
);

interface SentEntry {
  readonly queueUrl: string;
  readonly group: unknown;
  readonly body: Record<string, unknown>;
}

function sentTo(queueUrl: string): SentEntry[] {
  return calls.flatMap((call) => {
    const input = call.input as {
      QueueUrl: string;
      Entries?: Array<Record<string, unknown>>;
      MessageGroupId?: unknown;
      MessageBody?: string;
    };
    const entries = input.Entries ?? [input];
    return input.QueueUrl !== queueUrl
      ? []
      : entries.map((entry) => ({ queueUrl, group: entry.MessageGroupId, body: JSON.parse(entry.MessageBody as string) }));
  });
}

describe('message groups', () => {
  it("rings each object's doorbell in a group of its tenant and object, and sends each delivery in its tenant's group", async () => {
    // Prepare: two tenants, each with a webhook on a parent of two objects.
    const tenants = [await createTenant(sandbox, 'groups-a'), await createTenant(sandbox, 'groups-b')];
    for (const [i, tenant] of tenants.entries()) {
      await createWebhook(sandbox, tenant.key, { resource: 'project:1', url: `${receiver.url}/groups-${i}` });
    }

    // Act: each tenant publishes to both objects (the same resource names in both).
    for (const tenant of tenants) {
      const answer = await publish(sandbox, tenant.key, [
        { resource: 'task:1', parents: ['project:1'], type: 'task.changed', data: 1 },
        { resource: 'task:2', parents: ['project:1'], type: 'task.changed', data: 2 },
      ]);
      expect(answer.status).toBe(202);
    }
    await receiver.waitFor(() => receiver.deliveries('/groups-0').length + receiver.deliveries('/groups-1').length >= 2);

    // Assert: a doorbell per object, each in its object's group, four groups for four objects.
    const doorbells = sentTo(sandbox.wiring.distributeQueueUrl);
    const objects = tenants.flatMap((t) => ['task:1', 'task:2'].map((resource) => ({ tenantId: t.id, resource })));
    for (const doorbell of doorbells) {
      expect(doorbell.group).toBe(objectGroupId({ tenantId: doorbell.body.tenant as string, resource: doorbell.body.resource as string }));
    }
    const groups = new Set(doorbells.map((d) => d.group));
    expect([...groups].sort()).toEqual(objects.map(objectGroupId).sort());

    // Every delivery message in its tenant's group, whichever webhook or object it is for.
    const deliveries = sentTo(sandbox.wiring.deliverQueueUrl);
    expect(deliveries.length).toBeGreaterThanOrEqual(2);
    for (const delivery of deliveries) expect(delivery.group).toBe(delivery.body.tenantId);
    expect(new Set(deliveries.map((d) => d.group))).toEqual(new Set(tenants.map((t) => t.id)));
  });
});
