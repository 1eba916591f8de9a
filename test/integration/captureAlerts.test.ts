import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { findBinary } from '../../scripts/localServers.mjs';

// The alerts on binlog capture (capture down, capture behind) in deploy/prometheus/alerts.yml,
// checked with Prometheus' own tool: promtool, from Debian's prometheus package, which the
// integration global setup installs (so this file lives here though it needs no servers). That
// the capture series they read are the ones /metrics exports is checked against a real scrape in
// test/integration/captureProcesses.test.ts.

const PROMETHEUS_DIR = fileURLToPath(new URL('../../deploy/prometheus/', import.meta.url));
const ALERTS_FILE = `${PROMETHEUS_DIR}alerts.yml`;
const TESTS_DIR = `${PROMETHEUS_DIR}tests/`;
const CAPTURE_ALERTS = ['MvschedCaptureDown', 'MvschedCaptureBehind'];

interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface AlertTest {
  rule_files: string[];
  tests: Array<{ alert_rule_test?: Array<{ alertname: string; exp_alerts?: unknown[] }> }>;
}

const promtool = findBinary('promtool');
function run(args: string[]) {
  expect(promtool, 'promtool (apt-get install prometheus; the test bootstrap installs it as root)').toBeDefined();
  const r = spawnSync(promtool!, args, { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

function alertRules(): AlertRule[] {
  const doc = parse(readFileSync(ALERTS_FILE, 'utf8')) as { groups: Array<{ rules: AlertRule[] }> };
  return doc.groups.flatMap((g) => g.rules);
}

/** Test files with the alerts they test, and whether each case expects it to fire. */
function alertTests(): Array<{ file: string; doc: AlertTest; cases: Array<{ alert: string; fires: boolean }> }> {
  return readdirSync(TESTS_DIR)
    .filter((f) => f.endsWith('.test.yml'))
    .map((f) => {
      const doc = parse(readFileSync(`${TESTS_DIR}${f}`, 'utf8')) as AlertTest;
      const cases = doc.tests.flatMap((t) => (t.alert_rule_test ?? []).map((c) => ({ alert: c.alertname, fires: (c.exp_alerts ?? []).length > 0 })));
      return { file: `${TESTS_DIR}${f}`, doc, cases };
    });
}

describe('alerts on binlog capture (deploy/prometheus)', () => {
  it('pass promtool check rules', () => {
    const r = run(['check', 'rules', ALERTS_FILE]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain(`SUCCESS: ${alertRules().length} rules found`);
  });

  it('capture down: mvs_capture_active at 0; capture behind: mvs_capture_lag_seconds past the 30 s a refresh waits for it', () => {
    const rules = Object.fromEntries(alertRules().map((r) => [r.alert, r]));
    expect(rules.MvschedCaptureDown?.expr).toMatch(/^mvs_capture_active\s*==\s*0$/);
    expect(rules.MvschedCaptureDown?.labels?.severity).toBe('critical');
    expect(rules.MvschedCaptureBehind?.expr).toMatch(/^mvs_capture_lag_seconds\s*>\s*30$/);
    expect(rules.MvschedCaptureBehind?.labels?.severity).toBe('warning');
    for (const name of CAPTURE_ALERTS) {
      expect(rules[name]?.for, name).toBe('2m');
      expect(rules[name]?.annotations?.summary, name).toBeTruthy();
      expect(rules[name]?.annotations?.description, name).toMatch(/`mvsched (capture|status)`/);
    }
  });

  it('each has one unit test file that makes it fire and shows when it does not', () => {
    const files = alertTests();
    for (const name of CAPTURE_ALERTS) {
      const owners = files.filter((f) => f.cases.some((c) => c.alert === name));
      expect(owners.map((o) => o.file), `${name}: one test file`).toHaveLength(1);
      const cases = owners[0]!.cases.filter((c) => c.alert === name);
      expect(cases.some((c) => c.fires), `${name} fires in a test`).toBe(true);
      expect(cases.some((c) => !c.fires), `${name} stays quiet in a test`).toBe(true);
      expect(owners[0]!.doc.rule_files).toEqual(['../alerts.yml']);
    }
  });

  it('pass promtool test rules (each alert on synthetic series)', () => {
    const files = alertTests()
      .filter((f) => f.cases.some((c) => CAPTURE_ALERTS.includes(c.alert)))
      .map((f) => f.file);
    expect(files).toHaveLength(CAPTURE_ALERTS.length);
    const r = run(['test', 'rules', ...files]);
    expect(r.code, r.out).toBe(0);
    expect(r.out.match(/SUCCESS/g)?.length).toBe(files.length);
  });
});
