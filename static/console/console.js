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
