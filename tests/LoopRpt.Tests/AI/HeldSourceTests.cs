using LoopRpt.AI;
using LoopRpt.Inference;
using Microsoft.Extensions.AI;

namespace LoopRpt.Tests.AI;

/// <summary>
/// The chat client and the embedding generator hold their model source the same way (one <c>HeldSource</c>): what
/// <c>GetService</c> offers, and that the source is disposed with the client only when the client owns it.
/// </summary>
public class HeldSourceTests
{
    private sealed class CountingSource : ILoopRptModelSource, IDisposable
    {
        public int Disposals { get; private set; }
        public string ModelId => "counting";
        public LoopRptModelLease Acquire() => throw new NotSupportedException("not needed here");
        public void Dispose() => Disposals++;
    }

    [Fact]
    public void BothClientsOfferMetadataThemselvesAndTheSourceAndNothingKeyed()
    {
        var source = new CountingSource();
        using var chat = new LoopRptChatClient(source);
        using var embedder = new LoopRptEmbeddingGenerator(source);

        Assert.Same(chat.Metadata, chat.GetService(typeof(ChatClientMetadata)));
        Assert.Same(chat, chat.GetService(typeof(IChatClient)));
        Assert.Same(chat, chat.GetService(typeof(object)));          // the client, not its metadata
        Assert.Same(source, chat.GetService(typeof(ILoopRptModelSource)));
        Assert.Null(chat.GetService(typeof(ILoopRptModelSource), "key"));
        Assert.Null(chat.GetService(typeof(EmbeddingGeneratorMetadata)));

        Assert.Same(embedder.Metadata, embedder.GetService(typeof(EmbeddingGeneratorMetadata)));
        Assert.Same(embedder, embedder.GetService(typeof(IEmbeddingGenerator<string, Embedding<float>>)));
        Assert.Same(source, embedder.GetService(typeof(ILoopRptModelSource)));
        Assert.Null(embedder.GetService(typeof(ChatClientMetadata)));
        Assert.Equal("counting", chat.Metadata.DefaultModelId);
        Assert.Equal("counting", embedder.Metadata.DefaultModelId);
        Assert.Throws<ArgumentNullException>(() => chat.GetService(null!));
    }

    [Fact]
    public void TheSourceIsDisposedWithTheClientOnlyWhenOwned()
    {
        var shared = new CountingSource();
        new LoopRptChatClient(shared).Dispose();
        new LoopRptEmbeddingGenerator(shared).Dispose();
        Assert.Equal(0, shared.Disposals);

        var ownedByChat = new CountingSource();
        new LoopRptChatClient(ownedByChat, ownsSource: true).Dispose();
        Assert.Equal(1, ownedByChat.Disposals);

        var ownedByEmbedder = new CountingSource();
        new LoopRptEmbeddingGenerator(ownedByEmbedder, ownsSource: true).Dispose();
        Assert.Equal(1, ownedByEmbedder.Disposals);

        Assert.Equal("source", Assert.Throws<ArgumentNullException>(() => new LoopRptChatClient(null!)).ParamName);
        Assert.Equal("source", Assert.Throws<ArgumentNullException>(() => new LoopRptEmbeddingGenerator(null!)).ParamName);
    }
}
