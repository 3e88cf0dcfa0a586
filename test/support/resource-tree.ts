/**
 * The small resource tree the model-based properties publish on: `task:1` and `task:2`
 * under `project:1`, and `doc:1` alone. Each resource's events always name the same
 * parents, so a subscriber on a resource gets all of a child's events or none.
 */
import { expect } from 'vitest';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { publish } from './api.ts';

export const TREE: Readonly<Record<string, readonly string[]>> = {
  'task:1': ['project:1'],
  'task:2': ['project:1'],
  'project:1': [],
  'doc:1': [],
};
export const RESOURCES = Object.keys(TREE);

/** Whether the events of `resource` reach a webhook or stream on `on`: its own, or events naming it as a parent. */
export function reaches(resource: string, on: string): boolean {
  return resource === on || TREE[resource]?.includes(on) === true;
}

/** Publishes `count` events on `resource`, naming its parents; answers the ids of those accepted. */
export async function publishOnTree(
  sandbox: Sandbox,
  key: string,
  resource: string,
  count: number,
  data: (n: number) => unknown,
): Promise<string[]> {
  const events = Array.from({ length: count }, (_, n) => ({
    resource,
    ...(TREE[resource]?.length ? { parents: TREE[resource] } : {}),
    type: 'item.changed',
    data: data(n),
  }));
  const answer = await publish(sandbox, key, events);
  expect(answer.status, JSON.stringify(answer.body).slice(0, 500)).toBe(202);
  const results = answer.body.events as Array<{ id?: string; status: string }>;
  return results.flatMap((result) => (result.status === 'accepted' ? [result.id as string] : []));
}
