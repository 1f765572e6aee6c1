using System.Text.Json;
using LoopRpt.Checkpoints;
using LoopRpt.Hosting;
using LoopRpt.Inference;
using LoopRpt.Interop;
using LoopRpt.Model;
using LoopRpt.Tests.Cli;
using LoopRpt.Tokenization;
using Microsoft.Extensions.Options;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Checkpoints;

/// <summary>
/// The one model opener (<see cref="ModelOpener"/>) reads every layout the library writes, refuses anything else by name,
/// and makes a hosting model-store version usable by <c>looprpt score / generate / evaluate</c>.
/// </summary>
[Collection("Hosting")]
public sealed class ModelOpenerTests : IDisposable
{
    private readonly string _root = CliRunner.TempDir();

    public void Dispose()
    {
        try { Directory.Delete(_root, recursive: true); } catch (IOException) { }
    }

    /// <summary>A store whose versions use hosting's default byte tokenizer, with version 2 published from version 1.</summary>
    private ModelStore ByteStore(out OuroForCausalLM published)
    {
        var initial = Path.Combine(_root, "initial");
        using (var lm = TestUtil.TinyModel(vocab: ByteTokenizer.VocabularySize, seed: 3))
            ModelDirectory.Save(initial, lm, new ModelMeta { Tokenizer = ByteTokenizer.Describe() });
        var store = new ModelStore(Options.Create(new ModelStoreOptions { Root = Path.Combine(_root, "store"), InitialModelDirectory = initial }),
            new ByteTokenizerService());
        published = TestUtil.TinyModel(vocab: ByteTokenizer.VocabularySize, seed: 4);
        Assert.Equal(2, store.Publish(published, new ModelMeta { Tokenizer = ByteTokenizer.Describe() }));
        return store;
    }

    [Fact]
    public void OpenerRefusesAFolderThatIsNoModelWithASpecificMessage()
    {
        var notModel = Path.Combine(_root, "notes");
        Directory.CreateDirectory(notModel);
        File.WriteAllText(Path.Combine(notModel, "readme.txt"), "not a model");
        var e = Assert.Throws<InvalidDataException>(() => ModelOpener.Open(notModel));
        Assert.Contains($"'{notModel}' is not a model directory", e.Message);
        Assert.Contains("checkpoint folder with a 'latest' step", e.Message);
        Assert.Contains("model store with a 'current' version", e.Message);

        var missing = Path.Combine(_root, "nowhere");
        Assert.Contains(missing, Assert.Throws<DirectoryNotFoundException>(() => ModelOpener.Open(missing)).Message);

        File.WriteAllText(Path.Combine(notModel, ModelDirectory.ConfigFile), "{}");          // config.json alone: still no weights
        Assert.Throws<InvalidDataException>(() => ModelOpener.Open(notModel));

        var cli = CliRunner.Run("score", "--model", notModel, "--input", Path.Combine(notModel, "readme.txt"), "--threads", "1");
        Assert.Equal(LoopRpt.Cli.ExitCodes.ModelError, cli.Code);
        Assert.Contains("is not a model directory", cli.Err);
    }

    [Fact]
    public void ByteTokenizerDescriptionRoundTripsThroughTheCoreCodec()
    {
        var codec = TextCodec.FromDescription(new ByteTokenizerService().Describe());
        const string text = "héllo wörld ✓\n";
        var utf8 = System.Text.Encoding.UTF8.GetBytes(text).Select(b => (int)b).ToArray();
        Assert.Equal(utf8, codec.Encode(text));
        Assert.Equal([ByteTokenizer.EndOfTextId, .. utf8], codec.EncodePrompt(text));
        Assert.Equal(text, codec.Decode(codec.EncodePrompt(text)));                        // the start id has no text
        Assert.Equal((ByteTokenizer.EndOfTextId, ByteTokenizer.EndOfTextId), (codec.BosTokenId!.Value, codec.EosTokenId!.Value));
        Assert.Equal(new ByteTokenizerService().ToTextCodec().EncodePrompt(text), codec.EncodePrompt(text));
    }

    [Fact]
    public void EveryLayoutOpensToTheSameWeights()
    {
        using var lm = TestUtil.TinyModel(vocab: ByteTokenizer.VocabularySize, seed: 9);
        var model = Path.Combine(_root, "model");
        ModelDirectory.Save(model, lm, new ModelMeta { Tokenizer = ByteTokenizer.Describe() });
        var checkpoints = Path.Combine(_root, "ckpt");
        ModelDirectory.Save(Path.Combine(checkpoints, "step-00000004"), lm, new ModelMeta { Step = 4 });
        File.WriteAllText(Path.Combine(checkpoints, CheckpointManager.LatestFile), "step-00000004\n");
        var hf = Path.Combine(_root, "hf");
        OuroCheckpoint.Save(lm, hf, new OuroSaveOptions { MaxShardBytes = 20_000 });           // sharded, with an index
        Assert.True(File.Exists(Path.Combine(hf, ModelWeights.IndexFileName)));

        foreach (var (dir, hasMeta, hasCodec) in new[] { (model, true, true), (checkpoints, true, false), (hf, false, false) })
        {
            using var opened = ModelOpener.Open(dir, new ModelOpenOptions { CheckFiniteWeights = true });
            Assert.Equal(hasMeta, opened.Meta is not null);
            Assert.Equal(hasCodec, opened.Codec is not null);
            // Save → load of the same float32 tensors: the values are copied, not computed, so they are bitwise equal.
            foreach (var ((name, saved), (_, read)) in ModelWeights.Tensors(lm).Zip(ModelWeights.Tensors(opened.Model)))
                Assert.True(TestUtil.BitEqual(saved, read), $"{dir}: {name}");
        }
        Assert.EndsWith("step-00000004", ModelOpener.Resolve(checkpoints));
        var e = Assert.Throws<InvalidDataException>(() => ModelOpener.Open(hf, new ModelOpenOptions { RequireTokenizer = true }));
        Assert.Contains("has no tokenizer", e.Message);
    }

    [Fact]
    public void NonFiniteWeightsAreRefusedOnRequest()
    {
        using var lm = TestUtil.TinyModel(vocab: 64, seed: 2);
        using (no_grad()) lm.UniqueParameters().First().Param.view(-1)[0] = float.NaN;
        var dir = Path.Combine(_root, "nan");
        ModelDirectory.Save(dir, lm, new ModelMeta());
        using (ModelOpener.Open(dir)) { }                                                   // no check by default
        Assert.Throws<NotFiniteNumberException>(() => ModelOpener.Open(dir, new ModelOpenOptions { CheckFiniteWeights = true }));
    }

    [Fact]
    public void StoreVersionsAndTheStoreRootOpenWithTheirByteTokenizer()
    {
        using var store = ByteStore(out var published);
        using (published)
        {
            foreach (var dir in new[] { store.VersionDirectory(2), store.Root })
            {
                using var opened = ModelOpener.Open(dir);
                Assert.Equal(store.VersionDirectory(2), opened.Directory);
                Assert.Equal(TextCodec.Bytes().EncodePrompt("hi"), opened.Codec!.EncodePrompt("hi"));
                foreach (var ((name, saved), (_, read)) in ModelWeights.Tensors(published).Zip(ModelWeights.Tensors(opened.Model)))
                    Assert.True(TestUtil.BitEqual(saved, read), name);                      // saved then read back: bitwise equal
            }
        }
    }

    [Fact]
    public void CliScoreGenerateAndEvaluateOpenAModelStoreVersion()
    {
        using var store = ByteStore(out var published);
        published.Dispose();
        var corpus = Path.Combine(_root, "corpus.txt");
        File.WriteAllLines(corpus, CliRunner.CorpusLines(8));
        foreach (var model in new[] { store.VersionDirectory(2), store.Root })
        {
            var score = CliRunner.Run("score", "--model", model, "--input", corpus, "--threads", "1");
            Assert.True(score.Code == 0, score.ToString());
            var rows = JsonDocument.Parse(score.Out).RootElement;
            var first = rows.ValueKind == JsonValueKind.Array ? rows[0] : rows.GetProperty("documents")[0];
            // Each line is scored after the start id: one prediction per UTF-8 byte of the text.
            Assert.Equal(System.Text.Encoding.UTF8.GetByteCount(CliRunner.CorpusLines(8)[0]), first.GetProperty("tokens").GetInt32());

            var generate = CliRunner.Run("generate", "--model", model, "--prompt", "the cat", "-n", "3", "--format", "Json", "--threads", "1");
            Assert.True(generate.Code == 0, generate.ToString());
            Assert.Equal(TextCodec.Bytes().EncodePrompt("the cat"),
                JsonDocument.Parse(generate.Out).RootElement.GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray());

            var evaluate = CliRunner.Run("evaluate", "--model", model, "--input", corpus, "--seq-len", "16", "--threads", "1");
            Assert.True(evaluate.Code == 0, evaluate.ToString());
        }
    }
}
