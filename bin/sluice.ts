/**
 * The CDK app: `npx cdk deploy` deploys the stack `Sluice`. Config overrides come
 * from the context key `sluice`: in cdk.json (`"sluice": {"objectQueueCap": 5000}`)
 * or on the command line (`-c 'sluice={"objectQueueCap":5000}'`, which arrives as a string).
 */
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { SluiceStack } from '../lib/sluice-stack.ts';

const app = new App();
new SluiceStack(app, 'Sluice', {
  description: 'sluice: flood-proof webhooks and event streams',
  config: overridesFromContext(app.node.tryGetContext('sluice')),
});
// cdk-nag 3 is a validation plugin: synth fails on any finding not acknowledged with a reason.
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));

function overridesFromContext(value: unknown): Readonly<Record<string, unknown>> {
  const parsed: unknown = typeof value === 'string' ? JSON.parse(value) : (value ?? {});
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new Error('The context value `sluice` must be a JSON object of config overrides.');
  }
  return parsed as Record<string, unknown>;
}
