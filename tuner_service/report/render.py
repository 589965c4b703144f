"""The report as one self-contained HTML page (plots as data URIs) and as Markdown (plots as files)."""

from __future__ import annotations

import base64
import html

from tuner_service.report.content import Report, Section, Table
from tuner_service.study import files

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:70em;margin:2em auto;padding:0 1em;
 color:#222;line-height:1.45}
h1{margin-bottom:.1em}h2{margin-top:1.8em;border-bottom:1px solid #e4e4e4;padding-bottom:.15em}
.subtitle{color:#555;margin-top:0}
.banner{background:#fff4d6;border:1px solid #e0b000;border-radius:4px;padding:.6em .9em;font-weight:600}
.callout{background:#eef4ff;border-left:4px solid #3b6fd8;padding:.5em .9em;margin:.6em 0}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #d8d8d8;padding:.2em .5em;text-align:left;font-size:.85em;white-space:nowrap}
th{background:#f3f3f3}
table.facts td:first-child{color:#555;background:#fafafa}
tr.best td{background:#fff7c2;font-weight:600}
.wide{overflow-x:auto}
img{max-width:100%;display:block;margin:.4em 0}
.note{color:#555;font-size:.9em}
""".replace("\n", "")


def _html_table(table: Table) -> str:
    esc = html.escape
    cls = ' class="facts"' if table.header is None else ""
    out = [f'<div class="wide"><table{cls}>']
    if table.header is not None:
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in table.header) + "</tr>")
    for i, row in enumerate(table.rows):
        tr = '<tr class="best">' if i in table.marked else "<tr>"
        out.append(tr + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    out.append("</table></div>")
    return "".join(out)


def _html_section(section: Section, images: dict[str, bytes]) -> list[str]:
    esc = html.escape
    out = [f"<h2>{esc(section.title)}</h2>"]
    if section.callout:
        out.append(f'<p class="callout">{esc(section.callout)}</p>')
    if section.table:
        out.append(_html_table(section.table))
    if section.image:
        data = base64.b64encode(images[section.image]).decode()
        out.append(f'<img alt="{esc(section.title)}" src="data:image/png;base64,{data}">')
    out += [f'<p class="note">{esc(note)}</p>' for note in section.notes]
    return out


def render_html(report: Report, images: dict[str, bytes]) -> str:
    esc = html.escape
    body = [f"<h1>{esc(report.title)}</h1>", f'<p class="subtitle">{esc(report.subtitle)}</p>']
    body += [f'<p class="banner">{esc(b)}</p>' for b in report.banners]
    for section in report.sections:
        body += _html_section(section, images)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(report.title)}</title>"
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(table: Table) -> list[str]:
    if table.header is None:  # facts: a list reads better than a table without a header
        return [f"- **{_cell(k)}**: {_cell(v)}" for k, v in table.rows] + [""]
    lines = ["| " + " | ".join(_cell(h) for h in table.header) + " |", "|" + "---|" * len(table.header)]
    for i, row in enumerate(table.rows):
        cells = [f"**{_cell(c)}**" if i in table.marked and c else _cell(c) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def render_markdown(report: Report) -> str:
    lines = [f"# {report.title}", "", f"*{report.subtitle}*", ""]
    lines += [f"> **{b}**\n" for b in report.banners]
    for section in report.sections:
        lines += [f"## {section.title}", ""]
        if section.callout:
            lines += [f"> {section.callout}", ""]
        if section.table:
            lines += _md_table(section.table)
        if section.image:
            lines += [f"![{section.title}]({files.REPORT_FILES}/{section.image}.png)", ""]
        lines += [x for note in section.notes for x in (f"*{note}*", "")]
    return "\n".join(lines)
