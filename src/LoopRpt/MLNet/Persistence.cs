using System.ComponentModel;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;
using LoopRpt.MLNet;

namespace LoopRpt.MLNet.Persistence;

// ML.NET 5 keeps its model-loading machinery internal (docs/mlnet.md "Persistence"). A LoopRpt transformer therefore
// saves itself as an equivalent chain of PUBLIC components — its "portable twin":
//   CopyColumns/ConvertType (input → fixed internal name) → CustomMapping "LoopRpt.*StateKey.v1" (constant key "state")
//   → ValueMapping key → state JSON string → CustomMapping "LoopRpt.Tokenizer.v1" / "LoopRpt.Scorer.v1"
//   → CopyColumns (internal → user names) → DropColumns (internal names).
// ml.Model.Save writes the twin; ml.Model.Load rebuilds it from the contract names (ML.NET loads this assembly itself).
// The mapping factories decode the state once per state string (cached by reference, then by content hash).

/// <summary>Internal column names of the portable twins.</summary>
internal static class Cols
{
    public const string Text = "__LoopRpt_Text";
    public const string Tokens = "__LoopRpt_Tokens";
    public const string StateKey = "__LoopRpt_StateKey";
    public const string TokenizerState = "__LoopRpt_TokenizerState";
    public const string ScorerState = "__LoopRpt_ScorerState";
    public const string TokenIds = "__LoopRpt_TokenIds";
    public const string Out = "__LoopRpt_Out_";
    public const string Features = "__LoopRpt_Features";
    public const string StateKeyValue = "state";
}

/// <summary>Persistence plumbing (public only because ML.NET's CustomMapping requires it).</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class TextKeyInput
{
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.Text)] public ReadOnlyMemory<char> Text { get; set; }
}

/// <summary>Persistence plumbing (public only because ML.NET's CustomMapping requires it).</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class TokensKeyInput
{
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.Tokens)] public int[]? Tokens { get; set; }
}

/// <summary>Persistence plumbing (public only because ML.NET's CustomMapping requires it).</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class StateKeyOutput
{
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.StateKey)] public string Key { get; set; } = Cols.StateKeyValue;
}

/// <summary>Persistence plumbing: the constant state key for a text input.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class TextStateKeyFactory : CustomMappingFactory<TextKeyInput, StateKeyOutput>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.TextStateKey.v1";
    /// <inheritdoc/>
    public override Action<TextKeyInput, StateKeyOutput> GetMapping() => static (_, o) => o.Key = Cols.StateKeyValue;
}

/// <summary>Persistence plumbing: the constant state key for a token input.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class TokensStateKeyFactory : CustomMappingFactory<TokensKeyInput, StateKeyOutput>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.TokensStateKey.v1";
    /// <inheritdoc/>
    public override Action<TokensKeyInput, StateKeyOutput> GetMapping() => static (_, o) => o.Key = Cols.StateKeyValue;
}

/// <summary>Persistence plumbing (public only because ML.NET's CustomMapping requires it).</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class TokenizerInput
{
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.Text)] public ReadOnlyMemory<char> Text { get; set; }
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.TokenizerState)] public ReadOnlyMemory<char> State { get; set; }
}

/// <summary>Persistence plumbing (public only because ML.NET's CustomMapping requires it).</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class TokenizerOutput
{
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.TokenIds)] public int[] Tokens { get; set; } = [];
}

/// <summary>Persistence plumbing: tokenizes with the tokenizer described by the state column.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class TokenizerMappingFactory : CustomMappingFactory<TokenizerInput, TokenizerOutput>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.Tokenizer.v1";

    /// <inheritdoc/>
    public override Action<TokenizerInput, TokenizerOutput> GetMapping() => static (i, o) =>
    {
        var state = StateCache<TokenizerState>.Get(i.State, TokenizerState.Parse, static _ => true);
        o.Tokens = state.Encode(i.Text.IsEmpty ? null : i.Text.ToString());
    };
}

/// <summary>Persistence plumbing (public only because ML.NET's CustomMapping requires it).</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class ScorerInput
{
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.Tokens)] public int[]? Tokens { get; set; }
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.ScorerState)] public ReadOnlyMemory<char> State { get; set; }
}

/// <summary>Persistence plumbing: the scorer's outputs under internal names (see <see cref="ScoreColumns"/>).</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class ScorerOutput
{
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.Out + ScoreColumns.LogLikelihood)] public float LogLikelihood { get; set; }
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.Out + ScoreColumns.TokenLogProbabilities)] public float[] TokenLogProbabilities { get; set; } = [];
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.Out + ScoreColumns.ExitSteps)] public float[] ExitSteps { get; set; } = [];
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.Out + ScoreColumns.MeanExitStep)] public float MeanExitStep { get; set; }
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.Out + ScoreColumns.Perplexity)] public float Perplexity { get; set; }
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.Out + ScoreColumns.ComputeRatio)] public float ComputeRatio { get; set; }
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.Out + ScoreColumns.TokenEntropies)] public float[] TokenEntropies { get; set; } = [];
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.Out + ScoreColumns.Correct)] public float[] Correct { get; set; } = [];
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.Out + ScoreColumns.StepCorrectCounts)] public float[] StepCorrectCounts { get; set; } = [];
    /// <summary>Persistence plumbing: a column of the portable twin.</summary>
    [ColumnName(Cols.Out + ScoreColumns.TokenCount)] public int TokenCount { get; set; }
}

/// <summary>Persistence plumbing: scores one row with the model described by the state column (same engine as the batched path).</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class ScorerMappingFactory : CustomMappingFactory<ScorerInput, ScorerOutput>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.Scorer.v1";

    /// <inheritdoc/>
    public override Action<ScorerInput, ScorerOutput> GetMapping() => static (i, o) =>
    {
        var engine = StateCache<ScoringEngine>.Get(i.State, static json => ScorerState.Parse(json).CreateEngine(), static e => !e.IsDisposed);
        var s = engine.Score([i.Tokens])[0];
        o.LogLikelihood = s.LogLikelihood;
        o.TokenLogProbabilities = s.TokenLogProbabilities;
        o.ExitSteps = s.ExitSteps;
        o.MeanExitStep = s.MeanExitStep;
        o.Perplexity = s.Perplexity;
        o.ComputeRatio = s.ComputeRatio;
        o.TokenEntropies = s.TokenEntropies;
        o.Correct = s.Correct;
        o.StepCorrectCounts = s.StepCorrectCounts;
        o.TokenCount = s.TokenCount;
    };
}

/// <summary>
/// Decoded states by the identity of the string ValueMapping hands out (one decode per model, not per row), falling back
/// to a content hash so two copies of the same state share one decoded object.
/// </summary>
internal static class StateCache<T> where T : class
{
    private static readonly ConditionalWeakTable<object, T> ByReference = new();
    private static readonly Dictionary<string, WeakReference<T>> ByHash = new(StringComparer.Ordinal);
    private static readonly object Gate = new();

    public static T Get(ReadOnlyMemory<char> state, Func<string, T> create, Func<T, bool> valid)
    {
        var owner = Owner(state);
        if (owner is not null && ByReference.TryGetValue(owner, out var hit) && valid(hit)) return hit;
        lock (Gate)
        {
            if (owner is not null && ByReference.TryGetValue(owner, out hit) && valid(hit)) return hit;
            if (state.IsEmpty) throw new InvalidDataException("The LoopRpt state column is empty: the ML.NET model is incomplete or was not saved by LoopRpt.");
            var hash = Hash(state.Span);
            if (!(ByHash.TryGetValue(hash, out var weak) && weak.TryGetTarget(out var value) && valid(value)))
            {
                value = create(state.ToString());
                ByHash[hash] = new WeakReference<T>(value);
            }
            if (owner is not null) ByReference.AddOrUpdate(owner, value);
            return value;
        }
    }

    /// <summary>Makes a live object the decoded form of <paramref name="state"/> (the in-process model shares its engine).</summary>
    public static void Register(string state, T value)
    {
        lock (Gate)
        {
            ByReference.AddOrUpdate(state, value);
            ByHash[Hash(state.AsSpan())] = new WeakReference<T>(value);
        }
    }

    /// <summary>Forgets every decoded state (tests use it to force decoding from a saved model).</summary>
    internal static void Clear()
    {
        lock (Gate)
        {
            ByReference.Clear();
            ByHash.Clear();
        }
    }

    private static object? Owner(ReadOnlyMemory<char> m)
    {
        if (MemoryMarshal.TryGetString(m, out var s, out _, out _)) return s;
        if (MemoryMarshal.TryGetArray(m, out ArraySegment<char> seg)) return seg.Array;
        return null;
    }

    private static string Hash(ReadOnlySpan<char> chars) => Convert.ToHexString(SHA256.HashData(MemoryMarshal.AsBytes(chars)));
}

/// <summary>Builds the portable twins.</summary>
internal static class Twin
{
    public static IEstimator<ITransformer> TokenizerEstimator(MLContext ml, string outputColumn, string inputColumn, string stateJson)
    {
        IEstimator<ITransformer> e = ml.Transforms.CopyColumns(Cols.Text, inputColumn)
            .Append(ml.Transforms.CustomMapping(new TextStateKeyFactory().GetMapping(), TextStateKeyFactory.Contract))
            .Append(ml.Transforms.Conversion.MapValue(Cols.TokenizerState, [new KeyValuePair<string, string>(Cols.StateKeyValue, stateJson)], Cols.StateKey))
            .Append(ml.Transforms.CustomMapping(new TokenizerMappingFactory().GetMapping(), TokenizerMappingFactory.Contract))
            .Append(ml.Transforms.CopyColumns(outputColumn, Cols.TokenIds))
            .Append(ml.Transforms.DropColumns(Cols.Text, Cols.StateKey, Cols.TokenizerState, Cols.TokenIds));
        return e;
    }

    public static IEstimator<ITransformer> ScorerEstimator(MLContext ml, string tokenColumn, string prefix, string stateJson)
    {
        var e = ml.Transforms.Conversion.ConvertType(Cols.Tokens, tokenColumn, DataKind.Int32)
            .Append(ml.Transforms.CustomMapping(new TokensStateKeyFactory().GetMapping(), TokensStateKeyFactory.Contract))
            .Append(ml.Transforms.Conversion.MapValue(Cols.ScorerState, [new KeyValuePair<string, string>(Cols.StateKeyValue, stateJson)], Cols.StateKey))
            .Append<ITransformer>(ml.Transforms.CustomMapping(new ScorerMappingFactory().GetMapping(), ScorerMappingFactory.Contract));
        foreach (var c in ScoreColumns.All) e = e.Append<ITransformer>(ml.Transforms.CopyColumns(prefix + c, Cols.Out + c));
        return e.Append(ml.Transforms.DropColumns([Cols.Tokens, Cols.StateKey, Cols.ScorerState, .. ScoreColumns.All.Select(c => Cols.Out + c)]));
    }

    /// <summary>A one-row view with a single column <paramref name="name"/> of <paramref name="type"/> (to fit a twin).</summary>
    public static IDataView Dummy(MLContext ml, string name, DataViewType type)
    {
        if (type is TextDataViewType)
        {
            var def = SchemaDefinition.Create(typeof(TextRow));
            def[0].ColumnName = name;
            return ml.Data.LoadFromEnumerable([new TextRow()], def);
        }
        var item = (type as VectorDataViewType)?.ItemType;
        if (item == NumberDataViewType.Int64)
        {
            var def = SchemaDefinition.Create(typeof(LongTokensRow));
            def[0].ColumnName = name;
            return ml.Data.LoadFromEnumerable([new LongTokensRow()], def);
        }
        var d = SchemaDefinition.Create(typeof(IntTokensRow));
        d[0].ColumnName = name;
        return ml.Data.LoadFromEnumerable([new IntTokensRow()], d);
    }

    private sealed class TextRow { public string Value { get; set; } = ""; }
    private sealed class IntTokensRow { public int[] Value { get; set; } = []; }
    private sealed class LongTokensRow { public long[] Value { get; set; } = []; }
}
