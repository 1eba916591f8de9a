import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { findBinary } from '../../scripts/localServers.mjs';
import { ALERTS_FILE, alertRules, alertTestFiles, dashboard, dashboardExprs } from '../support/deploy.js';

// The alert rules and the Grafana dashboard in deploy/, checked with Prometheus' own tool:
// promtool, from Debian's prometheus package, which the integration global setup installs (so
// this file lives here though it needs no servers). That every metric they read is one the
// server exports is checked against a real scrape in test/integration/boardMetrics.test.ts.

const promtool = findBinary('promtool');

function run(args: string[]) {
  expect(promtool, 'promtool (apt-get install prometheus; the test bootstrap installs it as root)').toBeDefined();
  const r = spawnSync(promtool!, args, { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

interface AlertTest {
  rule_files: string[];
  tests: Array<{ alert_rule_test?: Array<{ alertname: string; exp_alerts?: unknown[] }> }>;
}

describe('Prometheus alert rules (deploy/prometheus)', () => {
  it('pass promtool check rules', () => {
    const r = run(['check', 'rules', ALERTS_FILE.pathname]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain(`SUCCESS: ${alertRules().length} rules found`);
  });

  it('cover what exists: no live worker, no planner leader, an MV failing, an MV late or past its target lag, a broken MV log', () => {
    const exprs = Object.fromEntries(alertRules().map((r) => [r.alert, r.expr]));
    expect(exprs.MvschedNoLiveWorker).toMatch(/mvs_live_nodes\s*==\s*0/);
    expect(exprs.MvschedNoPlannerLeader).toMatch(/mvs_planner_leader_present\s*==\s*0/);
    expect(exprs.MvschedMviewFailing).toMatch(/mvs_mview_consecutive_failures\s*>\s*0/);
    expect(exprs.MvschedMviewLate).toMatch(/mvs_mview_lag_seconds\s*>\s*2\s*\*\s*mvs_mview_interval_seconds/);
    expect(exprs.MvschedMviewPastTargetLag).toMatch(/mvs_mview_lag_seconds\s*>\s*mvs_mview_target_lag_seconds/);
    expect(exprs.MvschedMlogBroken).toMatch(/mvs_mlog_broken\s*==\s*1/);
    for (const r of alertRules()) {
      expect(r.labels?.severity, r.alert).toMatch(/^(critical|warning)$/);
      expect(r.annotations?.summary, r.alert).toBeTruthy();
      expect(r.annotations?.description, r.alert).toBeTruthy();
    }
  });

  it('each alert has a unit test file that makes it fire and shows when it does not', () => {
    const files = alertTestFiles().map((f) => ({ f, doc: parse(readFileSync(f, 'utf8')) as AlertTest }));
    for (const rule of alertRules()) {
      const cases = files.flatMap(({ f, doc }) =>
        doc.tests.flatMap((t) => (t.alert_rule_test ?? []).filter((c) => c.alertname === rule.alert).map((c) => ({ f, fires: (c.exp_alerts ?? []).length > 0 }))),
      );
      const owners = new Set(cases.map((c) => c.f));
      expect(owners.size, `${rule.alert}: one test file`).toBe(1);
      expect(cases.some((c) => c.fires), `${rule.alert} fires in a test`).toBe(true);
      expect(cases.some((c) => !c.fires), `${rule.alert} stays quiet in a test`).toBe(true);
    }
    for (const { f, doc } of files) expect(doc.rule_files, f).toEqual(['../alerts.yml']);
  });

  it('pass promtool test rules (each alert on synthetic series)', () => {
    const files = alertTestFiles();
    expect(files.length).toBe(alertRules().length);
    const r = run(['test', 'rules', ...files]);
    expect(r.code, r.out).toBe(0);
    expect(r.out.match(/SUCCESS/g)?.length).toBe(files.length);
  });
});

describe('Grafana dashboard (deploy/grafana/mvsched.json)', () => {
  it('is an importable dashboard with a Prometheus data source variable', () => {
    const d = dashboard();
    expect(d.uid).toBe('mvsched');
    expect(d.templating.list).toContainEqual(expect.objectContaining({ name: 'datasource', type: 'datasource' }));
    const ids = d.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of d.panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      if (p.type === 'row') continue;
      expect(p.datasource?.uid, p.title).toBe('${datasource}');
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
    }
  });

  it('has panels that do not overlap', () => {
    const cells = new Map<string, string>();
    for (const p of dashboard().panels) {
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          const key = `${x},${y}`;
          expect(cells.get(key), `${p.title} overlaps ${cells.get(key)} at ${key}`).toBeUndefined();
          cells.set(key, p.title);
        }
      }
    }
  });

  it('every query is valid PromQL (promtool check rules on them as recording rules)', () => {
    // Grafana's $__rate_interval is not PromQL; any range stands in for it.
    const rules = dashboardExprs().map((expr, i) => ({ record: `dashboard:check_${i}`, expr: expr.replaceAll('$__rate_interval', '5m') }));
    const file = join(mkdtempSync(join(tmpdir(), 'mvs-dash-')), 'dashboard-rules.yml');
    writeFileSync(file, stringify({ groups: [{ name: 'dashboard', rules }] }));
    const r = run(['check', 'rules', file]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain(`SUCCESS: ${rules.length} rules found`);
  });
});
