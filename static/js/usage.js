// vmpanel usage graphs: draws each `.usage-chart[data-usage-chart]` placeholder with uPlot
// (static/vendor/uPlot.iife.min.js, loaded before this file) from the JSON data block the
// placeholder names, and pauses htmx polling while the tab is hidden.
//
// Contract with the templates:
//   <div class="usage-chart" data-usage-chart="ID" data-unit="%" data-title="CPU">No data yet.</div>
//   <script type="application/json" id="ID">
//     {"t": [unix seconds...], "series": [{"label": "average", "values": [number|null...]}, ...],
//      "unit": "%", "min": 0, "max": 100}
//   </script>
// data-unit wins over "unit" in the JSON; data-title is optional. `null` values are gaps.
// "min"/"max" are the y axis bounds (null: fit the data); data beyond a bound widens it.
// Fewer than 2 timestamps with any value: nothing is drawn and the placeholder's text stays.
//
// No inline script or style anywhere: the Content-Security-Policy forbids them. Setting
// element.style from script (as uPlot does) is CSSOM, which style-src does not restrict.
(function () {
  'use strict';

  var HEIGHT = 160; // px, plot and axes; the title and legend add to it
  var RESIZE_DEBOUNCE_MS = 150;
  // Distinct colours in order of series (first two: average and maximum). Picked from the
  // panel's palette so they read on white and differ for common colour-vision deficiencies.
  var COLOURS = ['#0b5cad', '#bc4c00', '#1a7f37', '#8250df', '#cf222e', '#57606a'];
  var FILL_FIRST = 'rgba(11, 92, 173, 0.08)';
  var AXIS_FONT = '12px system-ui, -apple-system, "Segoe UI", "Noto Sans", sans-serif';
  var AXIS_COLOUR = '#656d76';
  var GRID_COLOUR = '#eaeef2';

  // One entry per drawn placeholder; pruned when htmx swaps the placeholder out, so old
  // uPlot instances (and the listeners they hold) do not pile up over hours of polling.
  var charts = [];

  // ---- number and unit formatting --------------------------------------------------

  // The page's language (base.html sets <html lang>), so numbers and times read like the
  // server-rendered table beside the chart. An unknown tag falls back to the browser's.
  var LOCALE = (function () {
    var lang = document.documentElement.getAttribute('lang') || undefined;
    try {
      new Intl.NumberFormat(lang);
      return lang;
    } catch (e) {
      return undefined;
    }
  })();

  var numberFormats = {};
  function formatNumber(value, decimals, fixed) {
    var key = decimals + (fixed ? 'f' : '');
    if (!numberFormats[key]) {
      numberFormats[key] = new Intl.NumberFormat(LOCALE, {
        minimumFractionDigits: fixed ? decimals : 0,
        maximumFractionDigits: decimals,
      });
    }
    return numberFormats[key].format(value);
  }

  // How each unit scales: `base` is the step between `names` (null: no scaling).
  var UNITS = {
    '%': { base: null, names: ['%'] },
    'B/s': { base: 1024, names: ['B/s', 'KiB/s', 'MiB/s', 'GiB/s', 'TiB/s', 'PiB/s'] },
    'B': { base: 1024, names: ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'] },
    'KiB': { base: 1024, names: ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'] },
    'MiB': { base: 1024, names: ['MiB', 'GiB', 'TiB', 'PiB'] },
    'bit/s': { base: 1000, names: ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s', 'Tbit/s'] },
    '/s': { base: 1000, names: ['/s', 'k/s', 'M/s', 'G/s', 'T/s'] },
    '': { base: 1000, names: ['', 'k', 'M', 'G', 'T'] },
  };

  function unitScale(unit) {
    // Any other unit (e.g. "ms") is shown as it is, unscaled.
    return UNITS[unit] || { base: null, names: [unit] };
  }

  // The step (power of base) that keeps `magnitude` below one base in that unit.
  function pickPrefix(scale, magnitude) {
    var i = 0;
    var div = 1;
    if (scale.base) {
      while (i < scale.names.length - 1 && Math.abs(magnitude) >= div * scale.base) {
        div *= scale.base;
        i++;
      }
    }
    return { div: div, name: scale.names[i] };
  }

  function withUnit(text, name) {
    return name ? text + '\u00a0' + name : text; // no-break space: "12.5 %" never wraps
  }

  // A single value (legend): about three significant figures, in its own best unit.
  function formatValue(value, scale) {
    if (value == null || !isFinite(value)) return '\u2014';
    var p = pickPrefix(scale, value);
    var v = value / p.div;
    var a = Math.abs(v);
    var decimals = a === 0 || a >= 100 ? 0 : a >= 10 ? 1 : 2;
    return withUnit(formatNumber(v, decimals, false), p.name);
  }

  // ---- y axis: ticks that are round numbers in the displayed unit --------------------
  // uPlot's own splits are round in raw units, which for bytes gives "1.91 MiB/s"; so the
  // range and the ticks are computed here, in the unit the top of the axis is shown in.

  function niceStep(rough) {
    var p = Math.pow(10, Math.floor(Math.log10(rough)));
    var f = rough / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
  }

  function decimalsOf(step) {
    // 2.5 -> 1, 0.25 -> 2, 20 -> 0; rounding guards against 0.1 + 0.2 style noise.
    var d = 0;
    while (d < 6 && Math.abs(Math.round(step * Math.pow(10, d)) - step * Math.pow(10, d)) > 1e-6) d++;
    return d;
  }

  // About one tick per 30 px leaves the 160 px chart four or five labelled lines.
  function yLayout(scale, lo, hi, plotHeight) {
    var p = pickPrefix(scale, Math.max(Math.abs(lo), Math.abs(hi)));
    var count = Math.max(2, Math.min(5, Math.floor(plotHeight / 30)));
    var step = niceStep((hi - lo) / p.div / count);
    return { div: p.div, name: p.name, step: step };
  }

  function yRange(chart, dataMin, dataMax) {
    var scale = chart.scale;
    var lo = chart.min != null ? Math.min(chart.min, dataMin == null ? chart.min : dataMin) : dataMin;
    var hi = chart.max != null ? Math.max(chart.max, dataMax == null ? chart.max : dataMax) : dataMax;
    if (lo == null) lo = 0;
    // Flat data (an idle disk: all zeros) gets four base units of room: ticks 0, 1, 2, 3, 4.
    if (hi == null || hi <= lo) hi = lo + 4;
    // Round the open ends outwards to a tick, so the top line is labelled.
    var l = yLayout(scale, lo, hi, HEIGHT - 40);
    var unitStep = l.step * l.div;
    if (chart.min == null) lo = Math.floor(lo / unitStep) * unitStep;
    if (chart.max == null || hi > chart.max) hi = Math.ceil(hi / unitStep - 1e-9) * unitStep;
    return [lo, hi];
  }

  function ySplits(chart, scaleMin, scaleMax) {
    var l = yLayout(chart.scale, scaleMin, scaleMax, HEIGHT - 40);
    var unitStep = l.step * l.div;
    var ticks = [];
    var first = Math.ceil(scaleMin / unitStep - 1e-9);
    for (var i = first; i * unitStep <= scaleMax + unitStep * 1e-9; i++) ticks.push(i * unitStep || 0); // no "-0"
    return ticks;
  }

  function yValues(chart, splits, scaleMin, scaleMax) {
    // The same layout as ySplits, so every label has the step's number of decimals.
    var l = yLayout(chart.scale, scaleMin, scaleMax, HEIGHT - 40);
    var decimals = decimalsOf(l.step);
    return splits.map(function (v) {
      return withUnit(formatNumber(v / l.div, decimals, true), l.name);
    });
  }

  // The y axis is as wide as its longest label, so "1,023 KiB/s" is never clipped and a
  // "%" axis does not waste room on a phone.
  function axisSize(u, values, axisIdx, cycleNum) {
    var axis = u.axes[axisIdx];
    if (cycleNum > 1) return axis._size;
    var size = axis.ticks.size + axis.gap;
    var longest = (values || []).reduce(function (acc, v) {
      return v.length > acc.length ? v : acc;
    }, '');
    if (longest) {
      u.ctx.font = axis.font[0];
      size += u.ctx.measureText(longest).width / devicePixelRatio;
    }
    return Math.ceil(size) + 2;
  }

  // ---- time axis, in the browser's local time -------------------------------------

  var timeFormats = {};
  function timeFormat(key, options) {
    if (!timeFormats[key]) timeFormats[key] = new Intl.DateTimeFormat(LOCALE, options);
    return timeFormats[key];
  }
  var HM = { hour: '2-digit', minute: '2-digit' };
  var HMS = { hour: '2-digit', minute: '2-digit', second: '2-digit' };
  var DAY = { month: 'short', day: 'numeric' };
  var DAY_HM = { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' };

  // Ticks show the time; a tick at local midnight shows the date instead, so a range over
  // several days still says which day is which without two-line labels.
  function xValues(u, splits, axisIdx, foundSpace, foundIncr) {
    return splits.map(function (t) {
      var d = new Date(t * 1000);
      if (foundIncr >= 86400 || (d.getHours() === 0 && d.getMinutes() === 0 && d.getSeconds() === 0)) {
        return timeFormat('day', DAY).format(d);
      }
      return timeFormat(foundIncr < 60 ? 'hms' : 'hm', foundIncr < 60 ? HMS : HM).format(d);
    });
  }

  // ---- drawing -------------------------------------------------------------------------

  function readData(el) {
    var block = document.getElementById(el.getAttribute('data-usage-chart') || '');
    if (!block) return null;
    var text = block.textContent;
    var json;
    try {
      json = JSON.parse(text);
    } catch (e) {
      return null;
    }
    if (!json || !Array.isArray(json.t) || !Array.isArray(json.series)) return null;
    return { text: text, json: json };
  }

  function toNumberOrNull(v) {
    return typeof v === 'number' && isFinite(v) ? v : null;
  }

  // Timestamps with a value in at least one series; a line needs two.
  function pointCount(data) {
    var n = 0;
    for (var i = 0; i < data[0].length; i++) {
      for (var s = 1; s < data.length; s++) {
        if (data[s][i] != null) {
          n++;
          break;
        }
      }
    }
    return n;
  }

  function widthOf(el) {
    var cs = getComputedStyle(el);
    return Math.floor(el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight));
  }

  function buildOptions(chart, width, title) {
    var scale = chart.scale;
    var series = [
      {
        // The time row of the legend; its label is hidden in usage.css (no words to translate).
        label: '',
        value: function (u, v, sidx, idx) {
          // With no cursor (and always on touch screens) the legend shows the latest figures.
          if (idx == null) idx = u.data[0].length - 1;
          return timeFormat('dayhm', DAY_HM).format(new Date(u.data[0][idx] * 1000));
        },
      },
    ];
    chart.labels.forEach(function (label, i) {
      var colour = COLOURS[i % COLOURS.length];
      series.push({
        label: label,
        stroke: colour,
        width: 1.5,
        fill: i === 0 ? FILL_FIRST : undefined,
        spanGaps: false, // a null is a gap (no sample), never interpolated across
        value: function (u, v, sidx, idx) {
          // The latest sample, as the time row says; a gap there shows as a dash, so a
          // stale figure is never passed off as the current one.
          if (idx == null) v = u.data[sidx][u.data[0].length - 1];
          return formatValue(v, scale);
        },
      });
    });

    var axisCommon = {
      font: AXIS_FONT,
      stroke: AXIS_COLOUR,
      grid: { stroke: GRID_COLOUR, width: 1 },
      ticks: { stroke: GRID_COLOUR, width: 1, size: 4 },
      gap: 4,
    };

    return {
      title: title || undefined,
      width: width,
      height: HEIGHT,
      series: series,
      scales: {
        x: { time: true },
        y: {
          range: function (u, dataMin, dataMax) {
            return yRange(chart, dataMin, dataMax);
          },
        },
      },
      axes: [
        Object.assign({}, axisCommon, { space: 70, size: 28, values: xValues }),
        Object.assign({}, axisCommon, {
          size: axisSize,
          splits: function (u, axisIdx, scaleMin, scaleMax) {
            return ySplits(chart, scaleMin, scaleMax);
          },
          values: function (u, splits) {
            return yValues(chart, splits, u.scales.y.min, u.scales.y.max);
          },
        }),
      ],
      // Hover shows the figures under the cursor; no drag-to-zoom, which a chart replaced
      // every 10 s would undo at once and which fights scrolling on touch screens.
      cursor: { drag: { x: false, y: false, setScale: false }, points: { size: 6 } },
      // Solid swatches in the line's colour (uPlot's default is the fill, nearly white here).
      legend: {
        live: true,
        markers: {
          width: 0,
          fill: function (u, i) {
            return COLOURS[(i - 1) % COLOURS.length];
          },
        },
      },
    };
  }

  function draw(el) {
    var source = readData(el);
    if (!source) return null;
    var json = source.json;
    var unit = el.hasAttribute('data-unit') ? el.getAttribute('data-unit') : json.unit || '';
    var data = [json.t.map(Number)];
    var labels = [];
    json.series.forEach(function (s) {
      var values = Array.isArray(s && s.values) ? s.values : [];
      var column = [];
      for (var i = 0; i < data[0].length; i++) column.push(toNumberOrNull(values[i]));
      data.push(column);
      labels.push(s && s.label != null ? String(s.label) : '');
    });

    var chart = {
      el: el,
      text: source.text,
      plot: null,
      saved: null, // the placeholder's own nodes (the "No data yet" text) while a chart shows
      width: 0,
      scale: unitScale(unit),
      min: toNumberOrNull(json.min),
      max: toNumberOrNull(json.max),
      labels: labels,
    };
    if (data.length < 2 || pointCount(data) < 2) return chart; // keep the server's text

    var width = widthOf(el);
    if (width < 50) return null; // hidden (display: none); tried again on resize or swap

    // Keep the server's text aside rather than deleting it: it comes back if a later
    // update has too few points, and it is what the htmx history snapshot should hold.
    chart.saved = document.createDocumentFragment();
    while (el.firstChild) chart.saved.appendChild(el.firstChild);

    chart.width = width;
    chart.plot = new uPlot(buildOptions(chart, width, el.getAttribute('data-title')), data, el);
    // Decorative: the server renders a table of the figures beside the chart.
    chart.plot.root.setAttribute('aria-hidden', 'true');
    return chart;
  }

  function destroy(chart) {
    if (chart.plot) {
      chart.plot.destroy();
      chart.plot = null;
    }
    if (chart.saved && chart.el.isConnected) chart.el.appendChild(chart.saved);
    chart.saved = null;
  }

  function findChart(el) {
    for (var i = 0; i < charts.length; i++) if (charts[i].el === el) return charts[i];
    return null;
  }

  // Drops charts whose placeholder left the page, redraws those whose data block changed
  // and draws new placeholders. Cheap enough to run on every swap: a page has a few charts.
  function refresh() {
    if (typeof uPlot === 'undefined') return; // vendor file missing: leave the text
    charts = charts.filter(function (chart) {
      if (chart.el.isConnected) return true;
      destroy(chart);
      return false;
    });
    var placeholders = document.querySelectorAll('.usage-chart[data-usage-chart]');
    Array.prototype.forEach.call(placeholders, function (el) {
      var old = findChart(el);
      if (old) {
        var source = readData(el);
        if (source && source.text === old.text) return;
        destroy(old);
        charts.splice(charts.indexOf(old), 1);
      } else {
        // A stray chart root with no instance (e.g. restored from a cache): not ours to keep.
        Array.prototype.forEach.call(el.querySelectorAll(':scope > .uplot'), function (n) {
          n.remove();
        });
      }
      var chart = draw(el);
      if (chart) charts.push(chart);
    });
  }

  function resize() {
    charts.forEach(function (chart) {
      if (!chart.plot || !chart.el.isConnected) return;
      var width = widthOf(chart.el);
      if (width >= 50 && width !== chart.width) {
        chart.width = width;
        chart.plot.setSize({ width: width, height: HEIGHT });
      }
    });
    refresh(); // draws placeholders that were too narrow (hidden) before
  }

  var resizeTimer = null;
  function onResize() {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(resize, RESIZE_DEBOUNCE_MS);
  }

  // htmx saves the page's markup for the back button before it swaps in a pushed URL. A
  // chart's markup carries style="" attributes, which the CSP would block on restore, and
  // blank canvases; so for that instant the placeholders hold their text again. htmx
  // clones synchronously right after this event, so a microtask puts the charts back.
  function beforeHistorySave() {
    var shown = charts.filter(function (chart) {
      return chart.plot && chart.saved && chart.el.isConnected;
    });
    shown.forEach(function (chart) {
      chart.el.removeChild(chart.plot.root);
      chart.el.appendChild(chart.saved.cloneNode(true));
    });
    Promise.resolve().then(function () {
      shown.forEach(function (chart) {
        if (!chart.el.isConnected || !chart.plot) return;
        while (chart.el.firstChild) chart.el.removeChild(chart.el.firstChild);
        chart.el.appendChild(chart.plot.root);
      });
    });
  }

  // ---- polling only while someone can see it ---------------------------------------

  function pausedElement(elt) {
    return elt && elt.closest ? elt.closest('[data-pause-when-hidden]') : null;
  }

  function onBeforeRequest(event) {
    // A hidden tab polling every 10 s for hours costs the server (and libvirt) for nothing.
    if (document.hidden && pausedElement(event.detail && event.detail.elt)) event.preventDefault();
  }

  function onVisibilityChange() {
    if (document.hidden || typeof htmx === 'undefined') return;
    // The figures may be minutes old; fetch now rather than at the next 10 s tick.
    // The templates put hx-trigger="every 10s, usage-refresh" on these elements.
    Array.prototype.forEach.call(document.querySelectorAll('[data-pause-when-hidden]'), function (el) {
      htmx.trigger(el, 'usage-refresh');
    });
  }

  function init() {
    var body = document.body;
    body.addEventListener('htmx:beforeRequest', onBeforeRequest);
    // afterSwap runs in the same task as the swap, before the browser paints: drawing there
    // spares a flash of the "No data yet" text (and a layout jump) during htmx's 20 ms settle
    // delay. afterSettle then catches anything else (out-of-band swaps); unchanged data is
    // not redrawn, so the second pass costs nothing.
    body.addEventListener('htmx:afterSwap', refresh);
    body.addEventListener('htmx:afterSettle', refresh);
    body.addEventListener('htmx:historyRestore', refresh);
    body.addEventListener('htmx:beforeHistorySave', beforeHistorySave);
    document.addEventListener('visibilitychange', onVisibilityChange);
    window.addEventListener('resize', onResize);
    refresh();
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', init);
  } else {
    init(); // loaded with defer (or late): the document is parsed already
  }
})();
