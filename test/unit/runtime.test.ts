import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { documentClient, sqsClient } from '../../functions/adapters/aws.ts';
import { SLUICE_VERSION } from '../../functions/core/model.ts';

describe('runtime', () => {
  it('runs on Node 24, the major of the Lambda runtime nodejs24.x', () => {
    // npm scripts put the `node` devDependency first on PATH; `npm ci --ignore-scripts`
    // or a bare `npx vitest` on the machine's Node would fail here.
    expect(Number(process.versions.node.split('.')[0])).toBe(24);
  });

  it('reports the package version in the user-agent', () => {
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    expect(SLUICE_VERSION).toBe(pkg.version);
  });

  it("builds SDK clients without the SDK's logger middleware, which filters every call for a no-op logger", () => {
    const dynamo = documentClient({ region: 'us-east-1' });
    const sqs = sqsClient({ region: 'us-east-1' });
    const stacks = [dynamo.middlewareStack.identify(), sqs.middlewareStack.identify()];
    expect(stacks.map((names) => names.some((name) => name.startsWith('loggerMiddleware')))).toEqual([false, false]);
    // The rest of the stack is the SDK's own: serializing, signing, retrying.
    expect(stacks.map((names) => names.some((name) => name.startsWith('httpSigningMiddleware')))).toEqual([true, true]);
    dynamo.destroy();
    sqs.destroy();
  });
});
