// Draws the usage page's charts from the figures the server embedded (Chart.js, when installed).
(() => {
  const data = JSON.parse(document.getElementById("usage-data").textContent);
  if (typeof Chart === "undefined") return;
  const palette = ["#c15f3c", "#3b6fd8", "#2f9e6e", "#d69e2e", "#8e5bd6", "#d64d86", "#2aa5b8", "#6b7280", "#a3633a", "#4c9a2a"];
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.color = "#667085";
  const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
  const stacked = (id, labels, series, money) => {
    const canvas = document.getElementById(id);
    if (!canvas) return;
    new Chart(canvas, {
      type: "bar",
      data: { labels, datasets: series.map((s, i) => ({ label: s.label, data: s.data, backgroundColor: palette[i % palette.length], borderRadius: 2, maxBarThickness: 28 })) },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: true, grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 16 } },
          y: { stacked: true, beginAtZero: true, ticks: { callback: (v) => (money ? "$" + v.toFixed(2) : compact.format(v)) } },
        },
        plugins: {
          legend: { position: "bottom", labels: { boxWidth: 10, boxHeight: 10 } },
          tooltip: { callbacks: { label: (c) => ` ${c.dataset.label}: ${money ? "$" + c.parsed.y.toFixed(4) : c.parsed.y.toLocaleString()}` } },
        },
      },
    });
  };
  stacked("chart-kinds", data.labels, data.kinds, false);
  stacked("chart-groups", data.labels, data.groups, false);
  stacked("chart-cost", data.cost_labels, data.cost, true);
  document.body.dataset.chartsDrawn = "1";
})();
