/* The page's only script (inlined by live.page; no library, nothing fetched from elsewhere).
 *
 * Live section: every data-live-every seconds, GET /api/live (the JSON API, with the page's own
 * query string) and redraw its charts here, with the same markup live.charts draws on the server
 * (every point: class "point", data-label, data-key, data-value). Star section: every
 * data-star-every seconds, GET /partials/star (the server's rendering of /api/star/top and
 * /api/star/views for the same parameters). The star schema's freshness (#star-freshness, beside
 * the star header; absent when the ETL API is not configured): every data-live-every seconds, GET
 * /api/star/freshness (its text, as the server renders it, and its numbers as data attributes).
 * Counters on <body>: data-refreshes, data-star-refreshes and data-freshness-refreshes
 * (successful redraws), data-refreshes-error / data-star-refreshes-error / data-freshness-refreshes-error.
 */
(function () {
  'use strict';
  var BAR = '#3b6ea5', AXIS = '#888', EMPTY = '<p class="empty">no data yet</p>';

  function esc(text) {
    return String(text).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
      .replace(/"/g, '&quot;').replace(/'/g, '&#x27;');
  }
  function figure(id, title, body) {
    return '<figure id="' + esc(id) + '" class="chart"><figcaption>' + esc(title) + '</figcaption>' + body + '</figure>';
  }
  function svgOpen(width, height, title) {
    return '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ' + width + ' ' + height + '" width="' + width +
      '" height="' + height + '" role="img" aria-label="' + esc(title) + '">';
  }
  function niceMax(value) {  // 1, 2 or 5 times a power of ten, at least value
    if (value <= 0) { return 1; }
    for (var scale = 1; ; scale *= 10) {
      for (var i = 0, steps = [1, 2, 5]; i < 3; i++) { if (steps[i] * scale >= value) { return steps[i] * scale; } }
    }
  }
  // Vertical bars over time: points [[iso label, value]], oldest first (live.charts.column_chart).
  function columnChart(id, title, points) {
    if (!points.length || !points.some(function (p) { return p[1]; })) { return figure(id, title, EMPTY); }
    var width = 720, height = 220, left = 48, bottom = 36, top = 10, plotW = width - left - 10, plotH = height - bottom - top;
    var yMax = niceMax(Math.max.apply(null, points.map(function (p) { return p[1]; })));
    var slot = plotW / points.length, barW = Math.max(1, slot * 0.8), every = Math.max(1, Math.floor(points.length / 8));
    var out = [svgOpen(width, height, title),
      '<line x1="' + left + '" y1="' + (top + plotH) + '" x2="' + (left + plotW) + '" y2="' + (top + plotH) + '" stroke="' + AXIS + '"/>',
      '<text x="' + (left - 6) + '" y="' + (top + 10) + '" text-anchor="end" font-size="11">' + yMax + '</text>',
      '<text x="' + (left - 6) + '" y="' + (top + plotH) + '" text-anchor="end" font-size="11">0</text>'];
    points.forEach(function (p, i) {
      var h = plotH * p[1] / yMax, x = left + i * slot + (slot - barW) / 2;
      out.push('<rect class="point" data-label="' + esc(p[0]) + '" data-value="' + p[1] + '" x="' + x.toFixed(1) + '" y="' +
        (top + plotH - h).toFixed(1) + '" width="' + barW.toFixed(1) + '" height="' + h.toFixed(1) + '" fill="' + BAR +
        '"><title>' + esc(p[0]) + ': ' + p[1] + '</title></rect>');
      if (i % every === 0) {
        out.push('<text x="' + (x + barW / 2).toFixed(1) + '" y="' + (height - 20) + '" text-anchor="middle" font-size="10">' +
          esc(String(p[0]).slice(11, 16)) + '</text>');
      }
    });
    return figure(id, title, out.join('') + '</svg>');
  }
  // Horizontal bars, largest first: points [[label, key, value]] (live.charts.bar_chart).
  function barChart(id, title, points) {
    if (!points.length) { return figure(id, title, EMPTY); }
    var width = 720, rowH = 22, labelW = 300, plotW = width - labelW - 70, height = rowH * points.length + 6;
    var xMax = Math.max.apply(null, [1].concat(points.map(function (p) { return p[2]; })));
    var out = [svgOpen(width, height, title)];
    points.forEach(function (p, i) {
      var y = 3 + i * rowH, w = plotW * p[2] / xMax, shown = p[0].length <= 44 ? p[0] : p[0].slice(0, 43) + '\u2026';
      out.push('<text x="' + (labelW - 6) + '" y="' + (y + rowH * 0.65).toFixed(1) + '" text-anchor="end" font-size="12">' + esc(shown) + '</text>');
      out.push('<rect class="point" data-label="' + esc(p[0]) + '" data-key="' + esc(p[1]) + '" data-value="' + p[2] + '" x="' + labelW +
        '" y="' + (y + 2) + '" width="' + w.toFixed(1) + '" height="' + (rowH - 6) + '" fill="' + BAR + '"><title>' + esc(p[0]) + ': ' +
        p[2] + '</title></rect>');
      out.push('<text x="' + (labelW + w + 4).toFixed(1) + '" y="' + (y + rowH * 0.65).toFixed(1) + '" font-size="12">' + p[2] + '</text>');
    });
    return figure(id, title, out.join('') + '</svg>');
  }
  function productLabel(p) { return p.name && p.name !== p.product_id ? p.name + ' (' + p.product_id + ')' : p.product_id; }

  // The live section from GET /api/live (live.page.live_section draws the same on the server).
  function liveSection(live) {
    var parts = ['<p class="muted">event time, ' + live.window_s + '-second windows up to ' + esc(live.until) + '; ' +
      live.events_seen + ' events consumed, ' + live.views_counted + ' views counted by this replica; windows older than ' +
      Math.floor(live.retention_s / 60) + ' minutes (wall clock) are dropped</p>', '<div class="grid">',
      columnChart('live-minutes', 'Views per minute (UTC)', live.views_per_minute.map(function (m) { return [m.window_start, m.views]; })),
      columnChart('live-hours', 'Views per hour (UTC, within the retention)', live.views_per_hour.map(function (h) { return [h.window_start, h.views]; }))];
    live.top.forEach(function (top) {
      parts.push(barChart('live-top-' + top.span_minutes, 'Top products, last ' + top.span_minutes + ' minutes',
        top.products.map(function (p) { return [productLabel(p), p.product_id, p.views]; })));
    });
    parts.push('</div>');
    return parts.join('');
  }

  function every(seconds, url, counter, apply) {
    var n = 0;
    window.setInterval(function () {
      fetch(url + window.location.search, {cache: 'no-store'})
        .then(function (r) { if (!r.ok) { throw new Error('HTTP ' + r.status); } return r; })
        .then(apply)
        .then(function () { n += 1; document.body.setAttribute(counter, String(n)); })
        .catch(function (e) { document.body.setAttribute(counter + '-error', String(e)); });
    }, seconds * 1000);
  }
  var body = document.body;
  every(Number(body.dataset.liveEvery), '/api/live', 'data-refreshes', function (r) {
    return r.json().then(function (live) { document.getElementById('live').innerHTML = liveSection(live); });
  });
  every(Number(body.dataset.starEvery), '/partials/star', 'data-star-refreshes', function (r) {
    return r.text().then(function (html) { document.getElementById('star-body').innerHTML = html; });
  });
  // live.page.freshness_html draws the same element on the server.
  function showFreshness(el, f) {
    el.textContent = f.text;
    el.className = f.status === 'unreachable' || f.status === 'not_running' ? 'muted error' : 'muted';
    el.setAttribute('data-status', f.status);
    [['data-behind-seconds', f.behind_seconds], ['data-as-of', f.star_as_of], ['title', f.reason]].forEach(function (a) {
      if (a[1] === null || a[1] === undefined || a[1] === '') { el.removeAttribute(a[0]); } else { el.setAttribute(a[0], String(a[1])); }
    });
  }
  var freshness = document.getElementById('star-freshness');
  if (freshness) {
    every(Number(body.dataset.liveEvery), '/api/star/freshness', 'data-freshness-refreshes', function (r) {
      return r.json().then(function (f) { showFreshness(freshness, f); });
    });
  }
})();
