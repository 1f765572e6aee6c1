using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.MLNet.Persistence;

// ML.NET 5 keeps its model-loading machinery internal (docs/mlnet.md "Persistence"). A LoopRpt transformer therefore
// saves itself as an equivalent chain of PUBLIC components — its "portable twin":
//   CopyColumns/ConvertType (input → fixed internal name) → CustomMapping "LoopRpt.*StateKey.v1" (constant key "state")
//   → ValueMapping key → state JSON string → CustomMapping "LoopRpt.Tokenizer.v1" / "LoopRpt.Scorer.v1"
//   → CopyColumns (internal → user names) → DropColumns (internal names).
// ml.Model.Save writes the twin; ml.Model.Load rebuilds it from the contract names (ML.NET loads this assembly itself).
// The mapping factories decode the state once per state string (cached by reference, then by content hash).

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
        foreach (var c in ScoreColumns.All) e = e.Append<ITransformer>(ml.Transforms.CopyColumns(prefix + c, Cols.OutputOf(c)));
        return e.Append(ml.Transforms.DropColumns([Cols.Tokens, Cols.StateKey, Cols.ScorerState, .. ScoreColumns.All.Select(Cols.OutputOf)]));
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

/// <summary>
/// The portable twins of a transformer that runs a <see cref="ScoringEngine"/> (the scorer, the featurizer): one per
/// token item type (Int32 or Int64), fitted on first use. The engine's state JSON is captured once and registered, so a
/// twin used in this process shares the live engine instead of decoding the state again.
/// </summary>
internal sealed class ScoringTwins(MLContext ml, ScoringEngine engine, string tokenColumn, Func<string> captureState,
    Func<string, IEstimator<ITransformer>> estimator)
{
    private readonly Dictionary<DataViewType, ITransformer> _twins = [];
    private string? _stateJson;

    /// <summary>The twin for token columns of <paramref name="tokenType"/>.</summary>
    public ITransformer For(DataViewType tokenType)
    {
        lock (_twins)
        {
            var key = ((VectorDataViewType)tokenType).ItemType;
            if (_twins.TryGetValue(key, out var twin)) return twin;
            if (_stateJson is null)
            {
                _stateJson = captureState();
                StateCache<ScoringEngine>.Register(_stateJson, engine);
            }
            twin = estimator(_stateJson).Fit(Twin.Dummy(ml, tokenColumn, tokenType));
            _twins[key] = twin;
            return twin;
        }
    }

    /// <summary>The row-to-row mapper of the twin for the token column of <paramref name="inputSchema"/>.</summary>
    public IRowToRowMapper Mapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var col = SchemaChecks.Tokens(inputSchema, tokenColumn);
        return For(col.Type).GetRowToRowMapper(inputSchema);
    }

    /// <summary>Saves the twin (an Int32 token column: what ML.NET's loader rebuilds).</summary>
    public void Save(ModelSaveContext ctx) => For(new VectorDataViewType(NumberDataViewType.Int32)).Save(ctx);
}
