using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.MLNet;

/// <summary>
/// The scorer's output: lazy and batched. A cursor passes the input columns through from one input cursor and, only
/// when a score column is read, scores the next <c>BatchSize</c> rows at once, read ahead through a second input
/// cursor that fetches only the token column (both cursors walk the same rows in the same order: no shuffling).
/// </summary>
internal sealed class ScoringDataView : IDataView
{
    private readonly IDataView _input;
    private readonly ScoringEngine _engine;
    private readonly DataViewSchema.Column _tokens;
    private readonly int _firstOutput;

    public ScoringDataView(IDataView input, ScoringEngine engine, DataViewSchema.Column tokens, DataViewSchema schema)
    {
        _input = input;
        _engine = engine;
        _tokens = tokens;
        Schema = schema;
        _firstOutput = input.Schema.Count;
    }

    public bool CanShuffle => false;

    public DataViewSchema Schema { get; }

    public long? GetRowCount() => _input.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var needed = columnsNeeded.Select(c => c.Index).ToHashSet();
        var inputNeeded = _input.Schema.Where(c => needed.Contains(c.Index) && c.Index < _firstOutput).ToList();
        bool scoring = needed.Any(i => i >= _firstOutput);
        return new Cursor(this, _input.GetRowCursor(inputNeeded), scoring ? _input.GetRowCursor([_tokens]) : null, needed);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
        => [GetRowCursor(columnsNeeded, rand)];

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly ScoringDataView _parent;
        private readonly DataViewRowCursor _main;
        private readonly ReadAheadBatches<RowScore>? _scores;
        private readonly HashSet<int> _active;
        private long _position = -1;

        public Cursor(ScoringDataView parent, DataViewRowCursor main, DataViewRowCursor? ahead, HashSet<int> active)
        {
            _parent = parent;
            _main = main;
            _active = active;
            if (ahead is not null) _scores = new(ahead, parent._tokens, parent._engine.BatchSize, parent._engine.Score, "scoring");
        }

        public override DataViewSchema Schema => _parent.Schema;
        public override long Position => _position;
        public override long Batch => _main.Batch;

        public override bool IsColumnActive(DataViewSchema.Column column)
            => column.Index < _parent._firstOutput ? _main.IsColumnActive(_main.Schema[column.Index]) : _active.Contains(column.Index);

        public override bool MoveNext()
        {
            if (!_main.MoveNext()) return false;
            _position++;
            return true;
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => _main.GetIdGetter();

        private RowScore Current() => _scores!.At(_position);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (column.Index < _parent._firstOutput) return _main.GetGetter<TValue>(_main.Schema[column.Index]);
            if (!_active.Contains(column.Index)) throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
            var name = ScoreColumns.All[column.Index - _parent._firstOutput];
            Delegate getter = name switch
            {
                ScoreColumns.LogLikelihood => Scalar(s => s.LogLikelihood),
                ScoreColumns.MeanExitStep => Scalar(s => s.MeanExitStep),
                ScoreColumns.Perplexity => Scalar(s => s.Perplexity),
                ScoreColumns.ComputeFraction => Scalar(s => s.ComputeFraction),
                ScoreColumns.TokenCount => (ValueGetter<int>)((ref int v) => v = Current().TokenCount),
                ScoreColumns.TokenLogProbabilities => Vector(s => s.TokenLogProbabilities),
                ScoreColumns.ExitSteps => Vector(s => s.ExitSteps),
                ScoreColumns.TokenEntropies => Vector(s => s.TokenEntropies),
                ScoreColumns.Correct => Vector(s => s.Correct),
                ScoreColumns.StepCorrectCounts => Vector(s => s.StepCorrectCounts),
                _ => throw new InvalidOperationException($"Unknown score column '{column.Name}'."),
            };
            return getter as ValueGetter<TValue>
                ?? throw new InvalidOperationException($"Invalid TValue in GetGetter: '{typeof(TValue)}', expected type: '{column.Type.RawType}'.");
        }

        private ValueGetter<float> Scalar(Func<RowScore, float> f) => (ref float v) => v = f(Current());

        private ValueGetter<VBuffer<float>> Vector(Func<RowScore, float[]> f) => ReadAheadBatches<RowScore>.VectorGetter(() => f(Current()));

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _main.Dispose();
                _scores?.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
