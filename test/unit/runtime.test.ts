import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
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
});
