"""The host check every paged-cache entry point runs before a kernel reads pages
(dsc.codegen.paged.bad_page): it finds exactly the entries rows use that name no page,
and only those (serving frameworks pad block tables past each row's length)."""

from hypothesis import given

from dsc.codegen.paged import bad_page
from strategies import LOTS, block_tables


@LOTS
@given(case=block_tables())
def test_bad_page_finds_the_first_used_entry_outside_the_pool(case):
    table, lens, page, pages = case
    used = [(b, j) for b in range(table.shape[0]) for j in range(-(-int(lens[b]) // page))]
    wrong = [(b, j, int(table[b, j])) for b, j in used if not 0 <= int(table[b, j]) < pages]
    assert bad_page(table, lens, page, pages) == (wrong[0] if wrong else None)
