// changeguard console: the live notice check on the filing form. The server's answer is what
// counts; this only explains a refusal before submitting. No external scripts.
(function () {
  var hint = document.getElementById('notice-check');
  var start = document.getElementById('planned_start');
  var emergency = document.querySelector('input[name="emergency"]');
  if (!hint || !start) return;
  var en = (document.documentElement.lang || '').indexOf('en') === 0;
  var earliest = hint.getAttribute('data-earliest');
  var original = hint.innerHTML;
  function check() {
    var day = (start.value || '').slice(0, 10);
    if (!day || (emergency && emergency.checked)) {
      hint.className = 'hint';
      hint.innerHTML = original;
      return;
    }
    if (day < earliest) {
      hint.className = 'hint refused';
      hint.textContent = en
        ? 'Not enough notice: filed now, the change may start from ' + earliest + ' 00:00; a start on ' +
          day + ' will be refused (emergencies excepted).'
        : '通知期不足：现在提交，最早可于 ' + earliest + ' 00:00 开始；计划开始日 ' + day +
          ' 太早，提交会被拒绝（紧急变更除外）。';
    } else {
      hint.className = 'hint';
      hint.textContent = en
        ? 'Enough notice: ' + day + ' is not before the earliest start ' + earliest + '.'
        : '通知期满足：' + day + ' 不早于最早可开始日 ' + earliest + '。';
    }
  }
  start.addEventListener('change', check);
  start.addEventListener('input', check);
  if (emergency) emergency.addEventListener('change', check);
  check();
})();

// The monthly schedule's print button (no inline handlers: the CSP allows scripts from here only).
document.querySelectorAll('button.print').forEach(function (b) {
  b.addEventListener('click', function () { window.print(); });
});

// A revealed secret: shown for data-seconds, then removed from the page (not merely hidden), and
// the history entry becomes the credential's page, so a reload or the back button cannot show it
// again. "Hide now" does the same at once; "Copy" puts it on the clipboard.
(function () {
  var box = document.getElementById('revealed');
  if (!box) return;
  var en = (document.documentElement.lang || '').indexOf('en') === 0;
  var secret = document.getElementById('secret');
  var timer = document.getElementById('secret-timer');
  var deadline = Date.now() + 1000 * parseInt(box.getAttribute('data-seconds') || '60', 10);
  box.setAttribute('data-hide-at', String(deadline));
  if (window.history && history.replaceState) history.replaceState(null, '', box.getAttribute('data-back'));
  var tick;
  function hide() {
    clearInterval(tick);
    var shown = document.getElementById('secret-box');
    if (shown) shown.parentNode.removeChild(shown);
    secret = null;
    if (timer && timer.parentNode) timer.parentNode.removeChild(timer);
    document.getElementById('secret-hidden').hidden = false;
  }
  function update() {
    var left = Math.ceil((deadline - Date.now()) / 1000);
    if (left <= 0) return hide();
    timer.textContent = en ? left + ' s until it is hidden' : left + ' 秒后自动隐藏';
  }
  document.getElementById('hide-secret').addEventListener('click', hide);
  // Leaving the page hides it too, so the back-forward cache cannot bring it back.
  window.addEventListener('pagehide', hide);
  document.getElementById('copy-secret').addEventListener('click', function () {
    if (!secret) return;
    var done = function (ok) {
      document.getElementById('copy-status').textContent = ok
        ? (en ? 'Copied.' : '已复制。')
        : (en ? 'Copy failed: select it by hand.' : '复制失败，请手动选择。');
    };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(secret.textContent).then(function () { done(true); }, function () { done(false); });
    } else {
      done(false);
    }
  });
  tick = setInterval(update, 250);
  update();
})();

// The filing form: the systems list narrowed by what is typed, and the action list showing only
// the chosen category's actions (the server checks both again).
(function () {
  var filter = document.getElementById('systems-filter');
  if (filter) {
    filter.addEventListener('input', function () {
      var q = filter.value.trim().toLowerCase();
      document.querySelectorAll('#systems label.system').forEach(function (l) {
        var box = l.querySelector('input');
        l.hidden = q !== '' && l.getAttribute('data-search').indexOf(q) < 0 && !box.checked;
      });
    });
  }
  var category = document.getElementById('category');
  var action = document.getElementById('action');
  if (!category || !action) return;
  // Each category's actions, taken out of the list and put back for the chosen category only
  // (hidden options are not hidden in every browser).
  var groups = Array.prototype.slice.call(action.querySelectorAll('optgroup'));
  function actions() {
    var kept = action.value;
    groups.forEach(function (g) { if (g.parentNode) g.parentNode.removeChild(g); });
    var mine = groups.filter(function (g) { return g.getAttribute('data-category') === category.value; });
    mine.forEach(function (g) { action.appendChild(g); });
    action.value = kept;
    if (action.selectedIndex < 0) action.value = '';
    action.required = mine.length > 0;
    action.disabled = mine.length === 0;
  }
  category.addEventListener('change', actions);
  actions();
})();
