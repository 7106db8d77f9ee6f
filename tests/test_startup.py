"""The start-up breakdown: phases between the marks, by hand."""

from trainers.common import startup


def test_phases_are_the_gaps_between_marks():
  marks = {"import": 103.0, "peers": 103.5, "cluster": 105.0, "data": 106.0}
  out = startup.breakdown(process_start=101.0, launched=100.0, first_step=110.0, marks=marks)
  assert out == {"launcher": 1.0, "import": 2.0, "peers": 0.5, "cluster": 1.5, "data": 1.0,
                 "first_step": 4.0}
  assert sum(out.values()) == 110.0 - 100.0


def test_unknown_ends_are_none_and_unmarked_phases_take_nothing():
  out = startup.breakdown(process_start=101.0, launched=None, first_step=None,
                          marks={"import": 103.0, "data": 106.0})
  assert out == {"launcher": None, "import": 2.0, "peers": 0.0, "cluster": 0.0, "data": 3.0,
                 "first_step": None}


def test_marks_keep_the_first_time_and_reset_forgets_them():
  startup.reset()
  startup.mark("import", 5.0)
  startup.mark("import", 9.0)
  assert startup.breakdown(4.0, 3.0, 6.0)["import"] == 1.0
  startup.reset()
  assert startup.breakdown(4.0, 3.0, 6.0)["import"] == 0.0
