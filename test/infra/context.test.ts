/**
 * How the CDK app reads its config overrides from context: cdk.json's `sluice` object,
 * or `-c 'sluice={…}'`, which arrives as a string. A mistake is refused by name, not
 * left to a JSON parser's stack trace or, worse, ignored.
 */
import { App } from 'aws-cdk-lib';
import { describe, expect, it } from 'vitest';
import { overridesFromContext } from '../../lib/context.ts';

const appWith = (context: Record<string, unknown>) => new App({ context });

describe('config overrides from context', () => {
  it('takes the sluice object of cdk.json, and the JSON string that -c gives', () => {
    expect(overridesFromContext(appWith({ sluice: { objectQueueCap: 5000 } }))).toEqual({ objectQueueCap: 5000 });
    expect(overridesFromContext(appWith({ sluice: '{"objectQueueCap":5000}' }))).toEqual({ objectQueueCap: 5000 });
    expect(overridesFromContext(appWith({}))).toEqual({});
  });

  it('refuses a -c value that is not JSON, naming the context key and the form it takes', () => {
    expect(() => overridesFromContext(appWith({ sluice: '{objectQueueCap:5000}' }))).toThrow(
      /The context value `sluice` is not JSON .*-c 'sluice=\{"objectQueueCap":5000\}'/,
    );
    expect(() => overridesFromContext(appWith({ sluice: '[1]' }))).toThrow(/`sluice` must be a JSON object/);
  });

  it('refuses a setting given as a context key of its own, which would be ignored, listing every one', () => {
    // `cdk deploy -c objectQueueCap=5000` (or `-c sluice.retentionDays=3`) reads naturally,
    // and would deploy the default.
    expect(() =>
      overridesFromContext(appWith({ sluice: { leaseMs: 40_000 }, objectQueueCap: '5000', 'sluice.retentionDays': '3' })),
    ).toThrow(
      /(?=.*objectQueueCap is a sluice setting)(?=.*sluice\.retentionDays is a sluice setting)(?=.*under the context key `sluice`)/s,
    );
  });
});
