// The browser half of tests/browser.rs: drives Debian's Chromium (headless) with
// playwright-core through the self-service page and the operator console of a running
// `tacto run`, and takes a screenshot of every page at phone and desktop sizes.
//
// Usage: node journey.cjs '{"link": …, "tampered": …, "expired": …, "base": …, "apiKey": …,
//   "account": …, "birthDate": "YYYY-MM-DD", "promiseDate": "YYYY-MM-DD", "total": "USD …",
//   "shots": "/dir"}'
// Prints one JSON line of what it saw; exits 1 with the reasons when a check fails.
'use strict';
const { chromium } = require('playwright-core');

const cfg = JSON.parse(process.argv[2]);
const failures = [];
const seen = {};
const check = (ok, what) => { if (!ok) failures.push(what); };
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1366, height: 900 };

async function shot(page, name) {
  await page.screenshot({ path: `${cfg.shots}/${name}.png`, fullPage: true });
}

/// Both sizes of the page as it is now.
async function shots(page, name) {
  const size = page.viewportSize();
  await page.setViewportSize(PHONE);
  await shot(page, `${name}-phone`);
  await page.setViewportSize(DESKTOP);
  await shot(page, `${name}-desktop`);
  await page.setViewportSize(size);
}

async function until(page, url, predicate, what) {
  for (let i = 0; i < 40; i++) {
    await page.goto(url);
    if (await predicate()) return true;
    await page.waitForTimeout(250);
  }
  failures.push(what);
  return false;
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    // ---- The customer, on a phone ---------------------------------------------------------
    const phone = await browser.newContext({
      viewport: PHONE, deviceScaleFactor: 2, isMobile: true, hasTouch: true, locale: 'en-US',
    });
    const p = await phone.newPage();
    let r = await p.goto(cfg.link);
    check(r.status() === 200, `the link opens (HTTP ${r.status()})`);
    check(!(await p.content()).includes(cfg.total), 'nothing about the account before the check');
    check(await p.getByLabel('Your date of birth').isVisible(), 'the date of birth is asked, with a label');
    await shots(p, '01-self-service-identity-check');
    // A wrong answer is refused, with an accessible error.
    await p.getByLabel('Your date of birth').fill('1990-01-01');
    await p.getByRole('button', { name: 'Continue' }).click();
    check(await p.getByRole('alert').isVisible(), 'a wrong answer is explained');
    await shots(p, '02-self-service-wrong-answer');
    // Keyboard only: the field is focusable and the form submits with Enter.
    await p.getByLabel('Your date of birth').focus();
    await p.getByLabel('Your date of birth').fill(cfg.birthDate);
    await p.keyboard.press('Enter');
    await p.waitForSelector('#total');
    seen.total = (await p.locator('#total').textContent()).trim();
    check(seen.total === cfg.total, `the balance is shown (${seen.total})`);
    check(!p.url().includes(cfg.account), 'no account id in the address');
    await shots(p, '03-self-service-account');
    // The promise.
    await p.locator('#promise summary').click();
    await shots(p, '04-self-service-promise-form');
    await p.getByLabel('Amount (USD)').fill('200.00');
    await p.getByLabel('Date', { exact: true }).fill(cfg.promiseDate);
    await p.getByRole('button', { name: 'Promise to pay' }).click();
    await p.waitForSelector('text=We registered your promise');
    seen.done = (await p.locator('main p').first().textContent()).trim();
    await shots(p, '05-self-service-promise-done');
    // Back on the account: the promise holds contact.
    await p.getByRole('link', { name: 'Back to my account' }).click();
    seen.status = (await p.locator('#promise-status').textContent().catch(() => '')).trim();
    check(seen.status.includes('You promised to pay'), `the promise shows on the account (${seen.status})`);
    await shots(p, '06-self-service-account-with-promise');
    // Spanish and Portuguese.
    await p.goto(`${cfg.link}?lang=es`);
    check((await p.locator('html').getAttribute('lang')) === 'es', 'the page speaks Spanish');
    await shots(p, '07-self-service-account-es');
    await p.goto(`${cfg.link}?lang=pt`);
    check((await p.locator('h1').textContent()).includes('O que você deve'), 'the page speaks Portuguese');
    await shots(p, '08-self-service-account-pt');
    // Tampered and expired links show nothing.
    const other = await browser.newContext({ viewport: PHONE, isMobile: true, locale: 'en-US' });
    const o = await other.newPage();
    r = await o.goto(cfg.tampered);
    check(r.status() === 403, `a tampered link is refused (HTTP ${r.status()})`);
    check((await o.content()).includes('This link does not work'), 'a tampered link says so');
    await shots(o, '09-self-service-tampered-link');
    r = await o.goto(cfg.expired);
    check(r.status() === 410, `an expired link is refused (HTTP ${r.status()})`);
    check((await o.content()).includes('This link has expired'), 'an expired link says so');
    check(!(await o.content()).includes(cfg.total), 'an expired link shows nothing');
    await shots(o, '10-self-service-expired-link');

    // ---- The operator, on a desktop ---------------------------------------------------------
    const desk = await browser.newContext({ viewport: DESKTOP, locale: 'en-US' });
    const c = await desk.newPage();
    await c.goto(`${cfg.base}/console`);
    check(c.url().endsWith('/console/login'), 'the console asks to sign in');
    await shots(c, '11-console-sign-in');
    await c.getByLabel('Password or API key').fill(cfg.apiKey);
    await c.getByRole('button', { name: 'Sign in' }).click();
    await c.waitForSelector('h1:has-text("Portfolio")');
    await until(c, `${cfg.base}/console`,
      async () => Number(await c.locator('#tile-accounts').textContent()) >= 2,
      'the portfolio counts the accounts');
    seen.charts = await c.locator('main svg').count();
    check(seen.charts >= 4, `the portfolio has its charts (${seen.charts})`);
    await shots(c, '12-console-portfolio');
    const account = `${cfg.base}/console/accounts/${encodeURIComponent(cfg.account)}`;
    await until(c, account,
      async () => (await c.locator('#timeline').textContent()).includes('jobs_recalled'),
      'the timeline shows the recall');
    const timeline = await c.locator('#timeline').textContent();
    seen.timeline_has_promise = timeline.includes('promise_made');
    check(seen.timeline_has_promise, 'the timeline shows the promise');
    check(timeline.includes('promise_hold'), 'the recall names the promise hold');
    check(await c.locator('#caps').isVisible(), 'the contact-pressure ledger is shown');
    check((await c.locator('#holds').textContent()).includes('Promise'), 'the promise hold is listed');
    await shots(c, '13-console-account');
    // A comparison of two policies.
    await c.goto(`${cfg.base}/console/compare`);
    await c.getByLabel('Accounts (10 to 5,000)').fill('200');
    await c.getByLabel('Days (1 to 60)').fill('10');
    await c.getByRole('button', { name: 'Compare' }).click();
    await c.waitForSelector('#comparison');
    await shots(c, '14-console-compare');
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify({ seen, failures }));
  process.exit(failures.length ? 1 : 0);
})().catch((e) => {
  console.error(e);
  console.log(JSON.stringify({ seen, failures: failures.concat([String(e)]) }));
  process.exit(1);
});
