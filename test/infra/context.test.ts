/**
 * How the CDK app reads its config overrides from context: cdk.json's `sluice` object,
 * or `-c 'sluice={…}'`, which arrives as a string. A mistake is refused by name, not
 * left to a JSON parser's stack trace or, worse, ignored.
 */
import { readFileSync } from 'node:fs';
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { CLOUDWATCH_ROLE_KEY, overridesFromContext, TABLE_REMOVAL_KEY } from '../../lib/context.ts';
import { Sluice } from '../../lib/sluice.ts';
import { stackFromContext } from '../../lib/sluice-stack.ts';

const appWith = (context: Record<string, unknown>) => new App({ context });

/** What bin/sluice.ts does with the context: the synth a deployer runs. */
const synth = (context: Record<string, unknown>) => () => {
  const app = appWith(context);
  return new Sluice(new Stack(app, 'S'), 'E', { config: overridesFromContext(app) });
};

describe('config overrides from context', () => {
  it('takes the sluice object of cdk.json, and the JSON string that -c gives', () => {
    expect(overridesFromContext(appWith({ sluice: { objectQueueCap: 5000 } }))).toEqual({ objectQueueCap: 5000 });
    expect(overridesFromContext(appWith({ sluice: '{"objectQueueCap":5000}' }))).toEqual({ objectQueueCap: 5000 });
    expect(overridesFromContext(appWith({}))).toEqual({});
  });

  it('refuses a -c value that is not JSON, naming the context key and the form it takes', () => {
    expect(synth({ sluice: '{objectQueueCap:5000}' })).toThrow(
      /The context value `sluice` is not JSON .*-c 'sluice=\{"objectQueueCap":5000\}'/,
    );
    expect(synth({ sluice: '[1]' })).toThrow(/`sluice` must be a JSON object/);
  });

  it('refuses a setting given as a context key of its own, which would be ignored, listing every one', () => {
    // `cdk deploy -c objectQueueCap=5000` (or `-c sluice.retentionDays=3`) reads naturally,
    // and would deploy the default.
    expect(synth({ sluice: { leaseMs: 40_000 }, objectQueueCap: '5000', 'sluice.retentionDays': '3' })).toThrow(
      /(?=.*objectQueueCap is a sluice setting)(?=.*sluice\.retentionDays is a sluice setting)(?=.*under the context key `sluice`)/s,
    );
  });

  it('lists a stray context key with the problems of the settings under `sluice`, in one synth', () => {
    // Reported apart, a deployer who moved objectQueueCap under `sluice` would meet the
    // other two only at the next synth.
    expect(synth({ objectQueueCap: '5000', sluice: { retryJitter: 2, leaseMs: -1 } })).toThrow(
      /(?=.*objectQueueCap is a sluice setting)(?=.*retryJitter must be)(?=.*leaseMs must be)/s,
    );
    // And with the construct's own checks (a schedule EventBridge cannot run).
    expect(synth({ 'sluice.leaseMs': '1', sluice: '{"reconcileIntervalSeconds":90}' })).toThrow(
      /(?=.*sluice\.leaseMs is a sluice setting)(?=.*reconcileIntervalSeconds must be a whole number of minutes)/s,
    );
  });

  it('refuses settings under a context key that is not `sluice` (a misspelling, another case), which would be ignored', () => {
    // `"Sluice": {…}` in cdk.json, or `-c 'sluice_config={…}'`, reads as meant, and the
    // deploy would quietly keep every default.
    expect(synth({ Sluice: { objectQueueCap: 5000 } })).toThrow(
      /The context key `Sluice` holds sluice settings \(objectQueueCap\): put them under the context key `sluice`/,
    );
    expect(synth({ sluiceConfig: '{"retentionDays":3,"leaseMs":40000}', sluice: { objectQueueCap: 0 } })).toThrow(
      /(?=.*`sluiceConfig` holds sluice settings \(retentionDays, leaseMs\))(?=.*objectQueueCap must be)/s,
    );
    // What else a CDK app's context holds (feature flags, cdk.json's own keys) is left alone.
    const cdkJson = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8')) as { context: Record<string, unknown> };
    expect(synth({ ...cdkJson.context, 'availability-zones:account=1:region=r': ['a', 'b'], other: { colour: 'blue' } })).not.toThrow();
  });
});

describe("the deploy's own choices from context", () => {
  /** The stack bin/sluice.ts makes, bundling skipped, as a template. */
  const stackWith = (context: Record<string, unknown>) => {
    const app = appWith({ ...context, 'aws:cdk:bundling-stacks': [] });
    return Template.fromStack(stackFromContext(app, 'Sluice'));
  };
  const tablePolicies = (template: Template) =>
    Object.values(template.findResources('AWS::DynamoDB::GlobalTable')).map((table) => table.DeletionPolicy);

  it('keeps the tables and sets the CloudWatch role of API Gateway by default', () => {
    const template = stackWith({});
    expect(tablePolicies(template)).toEqual(['Retain', 'Retain']);
    template.resourceCountIs('AWS::ApiGateway::Account', 1);
  });

  it('deletes the tables with the stack for sluice:tableRemovalPolicy destroy, from cdk.json or -c', () => {
    expect(tablePolicies(stackWith({ [TABLE_REMOVAL_KEY]: 'destroy' }))).toEqual(['Delete', 'Delete']);
    expect(tablePolicies(stackWith({ [TABLE_REMOVAL_KEY]: 'RETAIN' }))).toEqual(['Retain', 'Retain']);
  });

  it('leaves the account-wide CloudWatch role of API Gateway to another stack for sluice:apiGatewayCloudWatchRole false', () => {
    stackWith({ [CLOUDWATCH_ROLE_KEY]: false }).resourceCountIs('AWS::ApiGateway::Account', 0);
    // As -c gives it: a string.
    stackWith({ [CLOUDWATCH_ROLE_KEY]: 'false' }).resourceCountIs('AWS::ApiGateway::Account', 0);
  });

  it('refuses a value it does not know, listed with the settings’ problems in one message', () => {
    expect(() => stackWith({ [TABLE_REMOVAL_KEY]: 'snapshot', [CLOUDWATCH_ROLE_KEY]: 'no', sluice: { leaseMs: -1 } })).toThrow(
      /(?=.*`sluice:tableRemovalPolicy` must be retain or destroy, not "snapshot")(?=.*`sluice:apiGatewayCloudWatchRole` must be true or false, not "no")(?=.*leaseMs must be)/s,
    );
  });
});
